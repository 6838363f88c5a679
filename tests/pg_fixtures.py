"""PostgreSQL fixtures: one cluster per test session, one fresh database per test.

``MUMU_TEST_DATABASE_URL`` (a superuser URL) selects an existing server; otherwise an
embedded PostgreSQL runs in a temporary directory. Every test gets its own database,
cloned from a migrated template, so tests never see each other's rows.

Fixtures for everyone: ``pg_admin_url`` (owner/superuser, migrated database),
``pg_app_url`` (the NOSUPERUSER NOBYPASSRLS application role), ``app_pool``,
``admin_conn``, ``keyring`` (+ ``master_keys``), ``pg_settings`` and ``workspace``
(an async factory returning ``(workspace_id, api_key)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import apply_migrations, ensure_app_login
from mumu.db.urls import with_database, with_user
from mumu.db.workspaces import create_workspace
from mumu.settings import Settings


@dataclass(frozen=True)
class PgCluster:
    superuser_url: str
    template: str
    app_user: str
    app_password: str


async def _prepare(url: str, template: str, app_url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{template}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(url, template))
    try:
        await apply_migrations(conn)
        await ensure_app_login(conn, app_url)
    finally:
        await conn.close()


async def _drop(url: str, database: str, role: str | None = None) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if role is not None:
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


@contextlib.contextmanager
def pgdata_dir() -> Iterator[Path]:
    """A private folder for an embedded cluster, outside pytest's basetemp: pytest
    re-chmods that to 0700 whenever a session starts, which would lock out the
    ``pgserver`` user the cluster runs as."""
    folder = Path(tempfile.mkdtemp(prefix="mumu-test-pg-"))
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    external = os.environ.get("MUMU_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        server: EmbeddedPostgres | None = None
        if external:
            url = external
        else:
            server = EmbeddedPostgres(stack.enter_context(pgdata_dir()))
            asyncio.run(server.start())
            stack.callback(lambda: asyncio.run(server.stop()))
            url = server.url()
        yield from _cluster(url)


def _cluster(url: str) -> Iterator[PgCluster]:
    suffix = secrets.token_hex(4)
    cluster = PgCluster(url, f"mumu_tmpl_{suffix}", f"mumu_test_app_{suffix}",
                        secrets.token_urlsafe(16))
    app_url = with_user(url, cluster.app_user, cluster.app_password)
    asyncio.run(_prepare(url, cluster.template, app_url))
    try:
        yield cluster
    finally:
        asyncio.run(_drop(url, cluster.template, role=cluster.app_user))


@pytest.fixture
async def pg_admin_url(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A superuser URL of a fresh, migrated database of its own."""
    name = f"mumu_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_cluster.superuser_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_cluster.template}"')
    finally:
        await conn.close()
    try:
        yield with_database(pg_cluster.superuser_url, name)
    finally:
        await _drop(pg_cluster.superuser_url, name)


@pytest.fixture
def pg_app_url(pg_cluster: PgCluster, pg_admin_url: str) -> str:
    """The application role (NOSUPERUSER NOBYPASSRLS) on the test's database."""
    return with_user(pg_admin_url, pg_cluster.app_user, pg_cluster.app_password)


@pytest.fixture
async def app_pool(pg_app_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_app_url, min_size=1, max_size=8)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def admin_conn(pg_admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_admin_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def master_keys() -> str:
    """A fresh ``MUMU_MASTER_KEYS`` value (one primary key)."""
    return MasterKey.generate("k1").encoded()


@pytest.fixture
def keyring(master_keys: str) -> Keyring:
    return Keyring.parse(master_keys)


@pytest.fixture
def pg_settings(
    tmp_path: Path, pg_admin_url: str, pg_app_url: str, master_keys: str
) -> Settings:
    """Settings naming the test database and keyring (no NATS); extend with model_copy."""
    return Settings(
        data_dir=tmp_path / "mumu",
        database_url=pg_app_url,  # type: ignore[arg-type]
        database_admin_url=pg_admin_url,  # type: ignore[arg-type]
        master_keys=master_keys,  # type: ignore[arg-type]
    )


WorkspaceFactory = Callable[..., Awaitable[tuple[str, str]]]


@pytest.fixture
def workspace(admin_conn: asyncpg.Connection, keyring: Keyring) -> WorkspaceFactory:
    """``await workspace("name")`` → ``(workspace_id, api_key)`` of a new workspace."""
    data_keys = DataKeys(keyring)

    async def make(name: str = "test") -> tuple[str, str]:
        created = await create_workspace(admin_conn, data_keys, name)
        return created.workspace_id, created.api_key

    return make


@dataclass(frozen=True)
class ManagedPg:
    """A database as a managed PostgreSQL hands it out: owned by a plain role."""

    owner_url: str
    """``mumu_owner``: LOGIN CREATEROLE, no SUPERUSER, no BYPASSRLS; owns the database."""
    app_url: str
    """The application login (created by ``ensure_app_login`` run as the owner)."""
    superuser_url: str
    """Only for the test's own checks (a managed service would not give it out)."""


@pytest.fixture
async def managed_pg() -> AsyncIterator[ManagedPg]:
    """A cluster of its own in which ``mumu_app`` does not exist yet and whose database
    ``mumu`` belongs to a non-superuser CREATEROLE role, as on a managed PostgreSQL
    service (RDS, Cloud SQL, Azure...): every migration must run as that owner."""
    with pgdata_dir() as pgdata:
        server = EmbeddedPostgres(pgdata)
        await server.start()
        try:
            conn = await asyncpg.connect(server.url())
            try:
                await conn.execute(
                    "CREATE ROLE mumu_owner LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS NOCREATEDB")
                await conn.execute("CREATE DATABASE mumu OWNER mumu_owner")
            finally:
                await conn.close()
            yield ManagedPg(
                owner_url=server.url("mumu", user="mumu_owner"),
                app_url=server.url("mumu", user="mumu_managed_app",
                                   password=secrets.token_urlsafe(12)),
                superuser_url=server.url("mumu"),
            )
        finally:
            await server.stop()
