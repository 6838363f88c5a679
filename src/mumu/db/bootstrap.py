"""The database side of ``mumu up``: PostgreSQL, migrations, app role, keyring, workspace.

``bootstrap(database, master_keys, data_dir)`` uses ``MUMU_DATABASE_ADMIN_URL`` and
``MUMU_DATABASE_URL`` when set, otherwise runs an embedded PostgreSQL in
``data_dir/postgres``. Without ``MUMU_MASTER_KEYS`` it creates a development keyring
file (0600), for the embedded database only: an external database needs
``MUMU_MASTER_KEYS``. On the very first start it creates the workspace ``default`` and announces
its id and API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from mumu.crypto import Keyring, MasterKey
from mumu.crypto.errors import KeyringError
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import APP_GROUP_ROLE, apply_migrations, ensure_app_login
from mumu.db.settings import DatabaseSettings
from mumu.db.workspaces import create_workspace, workspace_ids

log = logging.getLogger(__name__)

DATABASE = "mumu"
KEYRING_FILE = "master-keys"
PASSWORD_FILE = "postgres-app-password"  # noqa: S105 - a file name
STATE_FILE = "database.json"
"""Where the embedded database's URLs are kept (0600), for ``mumu migrate|workspace|keys``."""


@dataclass
class DevDatabase:
    """What ``mumu up`` needs: env for child processes, lines to print, and a stop."""

    env: dict[str, str]
    announce: list[str] = field(default_factory=list)
    server: EmbeddedPostgres | None = None
    workspaces: list[str] = field(default_factory=list)
    """Every workspace id (when ``mumu up`` owns the schema); the broker provisions them."""
    created: str | None = None
    """The workspace this start created (the first start's ``default``), else None."""

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def _secret_file(path: Path, make: str) -> str:
    """The content of ``path``; written (0600) with ``make`` when missing."""
    if path.exists():
        return path.read_text().strip()
    _write_private(path, make + "\n")
    return make


def dev_keyring_text(data_dir: Path) -> str:
    """The development keyring (created on first use), with a warning."""
    path = data_dir / KEYRING_FILE
    if not path.exists():
        log.warning(
            "MUMU_MASTER_KEYS is not set: created a DEVELOPMENT ONLY keyring file %s "
            "(mode 0600). Anyone who can read it can decrypt the data; set "
            "MUMU_MASTER_KEYS from a secret store in production.", path,
        )
    else:
        log.warning("using the DEVELOPMENT ONLY keyring file %s", path)
    return _secret_file(path, MasterKey.generate("dev1").encoded())


def keyring_text(master_keys: SecretStr | None, data_dir: Path) -> str:
    if master_keys is not None:
        return master_keys.get_secret_value()
    return dev_keyring_text(data_dir)


async def _embedded(data_dir: Path) -> tuple[EmbeddedPostgres, str, str]:
    server = EmbeddedPostgres(data_dir / "postgres")
    await server.start()
    conn = await asyncpg.connect(server.url())
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    password = await asyncio.to_thread(
        _secret_file, data_dir / PASSWORD_FILE, secrets.token_urlsafe(24))
    app_url = server.url(DATABASE, user=APP_GROUP_ROLE, password=password)
    return server, server.url(DATABASE), app_url


async def bootstrap(
    database: DatabaseSettings, master_keys: SecretStr | None, data_dir: Path
) -> DevDatabase:
    """Make the database ready for ``mumu up`` (fast on a second start: data is reused)."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    server: EmbeddedPostgres | None = None
    admin_url: str | None
    if database.admin_url is None and database.url is None:
        server, admin_url, app_url = await _embedded(data_dir)
    else:
        admin_url = database.admin_url.get_secret_value() if database.admin_url else None
        if database.url is None:
            raise RuntimeError("MUMU_DATABASE_ADMIN_URL is set but MUMU_DATABASE_URL is not")
        if master_keys is None:
            raise RuntimeError(
                "MUMU_MASTER_KEYS is not set: an external database (MUMU_DATABASE_URL) needs "
                "the master keyring from the environment (`mumu keys generate` makes one; keep "
                "it in a secret store). The development keyring file is only for the "
                "embedded PostgreSQL of `mumu up`."
            )
        app_url = database.url.get_secret_value()
    keys = await asyncio.to_thread(keyring_text, master_keys, data_dir)
    keyring = Keyring.parse(keys)
    announce: list[str] = []
    workspaces: list[str] = []
    created: str | None = None
    try:
        if admin_url is not None:
            announce, created = await _prepare(admin_url, app_url, keyring)
            workspaces = await _workspaces(admin_url)
        if server is not None:
            await asyncio.to_thread(server.allow_password_only, APP_GROUP_ROLE)
            conn = await asyncpg.connect(admin_url or server.url())
            try:
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            await asyncio.to_thread(
                _write_private, data_dir / STATE_FILE,
                json.dumps({"admin_url": admin_url, "app_url": app_url}))
    except BaseException:
        if server is not None:
            await server.stop()
        raise
    env = {"MUMU_DATABASE_URL": app_url, "MUMU_MASTER_KEYS": keys}
    return DevDatabase(
        env=env, announce=announce, server=server, workspaces=workspaces, created=created,
    )


async def _workspaces(admin_url: str) -> list[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        return [str(ws) for ws in await workspace_ids(conn)]
    finally:
        await conn.close()


async def _prepare(
    admin_url: str, app_url: str, keyring: Keyring,
) -> tuple[list[str], str | None]:
    conn = await asyncpg.connect(admin_url)
    try:
        await apply_migrations(conn)
        await ensure_app_login(conn, app_url)
        if await workspace_ids(conn):
            return [], None
        created = await create_workspace(conn, DataKeys(keyring), "default")
    finally:
        await conn.close()
    log.info("created workspace 'default' %s", created.workspace_id)
    lines = [f"workspace: {created.workspace_id}", f"api key: {created.api_key}"]
    return lines, str(created.workspace_id)


def admin_url_of(database: DatabaseSettings, data_dir: Path) -> str:
    """The owner URL: ``MUMU_DATABASE_ADMIN_URL``, else the embedded one of ``mumu up``."""
    if database.admin_url is not None:
        return database.admin_url.get_secret_value()
    state = data_dir / STATE_FILE
    if state.exists():
        return str(json.loads(state.read_text())["admin_url"])
    raise RuntimeError(
        "MUMU_DATABASE_ADMIN_URL is not set and there is no embedded database in "
        f"{data_dir} (start `mumu up` once, or set the URL)"
    )


def uses_dev_keyring(
    master_keys: SecretStr | None, data_dir: Path, database: DatabaseSettings
) -> bool:
    """True when the CLI works on the embedded database of ``mumu up`` with its development
    keyring: no ``MUMU_MASTER_KEYS``, no external database, and ``data_dir`` an absolute
    path holding both (a relative one would depend on where the command runs, and a
    keyring planted there would wrap new data keys)."""
    return (master_keys is None and database.url is None and database.admin_url is None
            and data_dir.is_absolute() and (data_dir / STATE_FILE).exists()
            and (data_dir / KEYRING_FILE).exists())


def keyring_of(
    master_keys: SecretStr | None, data_dir: Path, database: DatabaseSettings
) -> Keyring:
    """``MUMU_MASTER_KEYS``, else the development keyring file of ``mumu up``'s embedded
    database (see ``uses_dev_keyring``); a clear error otherwise."""
    if uses_dev_keyring(master_keys, data_dir, database):
        return Keyring.parse(dev_keyring_text(data_dir))
    if master_keys is None and (data_dir / KEYRING_FILE).exists():
        why = ("an external database needs MUMU_MASTER_KEYS"
               if database.url is not None or database.admin_url is not None
               else f"the CLI reads it only from an absolute MUMU_DATA_DIR (is {data_dir}) "
               "holding `mumu up`'s embedded database")
        raise KeyringError(
            f"MUMU_MASTER_KEYS is not set, and the development keyring "
            f"{data_dir / KEYRING_FILE} is not used: {why}")
    return Keyring.from_secret(master_keys)


def add_dev_master_key(data_dir: Path, key: MasterKey) -> None:
    """Append ``key`` (not primary) to the development keyring file of ``mumu up``."""
    path = data_dir / KEYRING_FILE
    _write_private(path, f"{path.read_text().strip()},{key.encoded()}\n")


def promote_dev_master_key(data_dir: Path, key_id: str) -> None:
    """List ``key_id`` first (primary) in the development keyring file."""
    path = data_dir / KEYRING_FILE
    promoted = Keyring.parse(path.read_text()).promoted(key_id)
    _write_private(path, promoted.encoded() + "\n")
