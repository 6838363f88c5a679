"""The database of ``mumu bench persist``: a fresh database, its roles and tables, checks.

Everything the benchmark measures against is set up as in production: the migrations,
the NOSUPERUSER NOBYPASSRLS application role (the stage and the plain consumers both
connect as it), one workspace per tenant with its data key, plus the plaintext
``bench_plain`` tables of the baseline. A rate only counts when every row is stored.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from mumu.bench.persist_rows import PLAIN_SCHEMA
from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import apply_migrations, ensure_app_login
from mumu.db.urls import with_database, with_user
from mumu.db.workspaces import create_workspace
from mumu.settings import Settings

APP_USER = "mumu_bench_app"


@contextlib.asynccontextmanager
async def bench_database(settings: Settings, scratch: Path) -> AsyncIterator[str]:
    """A superuser/owner URL of a fresh database (embedded unless an admin URL is set)."""
    server: EmbeddedPostgres | None = None
    if settings.database_admin_url is not None:
        base = settings.database_admin_url.get_secret_value()
    else:
        server = EmbeddedPostgres(scratch / "pg")
        await server.start()
        base = server.url()
    name = f"mumu_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    try:
        yield with_database(base, name)
    finally:
        conn = await asyncpg.connect(base)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
        if server is not None:
            await server.stop()


async def setup(admin_url: str, workspaces: int) -> tuple[str, str, DataKeys, list[str]]:
    """Migrate, add the app role and the plain tables: (app url, keyring, keys, workspaces)."""
    app_url = with_user(admin_url, APP_USER, secrets.token_urlsafe(12))
    master = MasterKey.generate("bench").encoded()
    data_keys = DataKeys(Keyring.parse(master))
    admin = await asyncpg.connect(admin_url)
    try:
        await apply_migrations(admin)
        await ensure_app_login(admin, app_url)
        await admin.execute(PLAIN_SCHEMA)
        await admin.execute(
            f"GRANT USAGE ON SCHEMA bench_plain TO {APP_USER}; GRANT SELECT, INSERT "
            f"ON ALL TABLES IN SCHEMA bench_plain TO {APP_USER}")
        ids = [(await create_workspace(admin, data_keys, f"bench{i}")).workspace_id
               for i in range(workspaces)]
    finally:
        await admin.close()
    return app_url, master, data_keys, ids


async def stored_rows(admin_url: str, schema: str, *, expected: int) -> int:
    """The transcripts and answers stored in ``schema``; an error unless ``expected``."""
    conn = await asyncpg.connect(admin_url)
    try:
        stored: int = (
            await conn.fetchval(f"SELECT count(*) FROM {schema}.transcripts")
            + await conn.fetchval(f"SELECT count(*) FROM {schema}.answers"))
    finally:
        await conn.close()
    if stored != expected:
        raise RuntimeError(f"{schema}: {stored} rows stored of {expected} published")
    return stored


async def truncate(admin_url: str) -> None:
    """Every side starts from empty tables, so index sizes match."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("TRUNCATE bench_plain.transcripts, bench_plain.answers, "
                           "mumu.transcripts, mumu.answers, mumu.sessions")
    finally:
        await conn.close()
