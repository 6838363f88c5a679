"""Migrations and the app login run by a NON-superuser owner (a managed PostgreSQL).

On PostgreSQL 16+ a CREATEROLE role may create roles but may not ALTER their
SUPERUSER/BYPASSRLS attributes; the migrations and ``ensure_app_login`` must work with
only that, and row-level security must then hold exactly as with a superuser owner.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from mumu.crypto import Keyring, MasterKey
from mumu.db.api_keys import live_keys, resolve_key, revoke_key
from mumu.db.datakeys import DataKeys
from mumu.db.history import session_history
from mumu.db.migrate import apply_migrations, ensure_app_login, migrations
from mumu.db.pool import workspace_tx
from mumu.db.records import TranscriptRecord, write_records
from mumu.db.workspaces import create_workspace, list_workspaces, resolve_api_key
from tests.pg_fixtures import ManagedPg


def said(text: str) -> TranscriptRecord:
    return TranscriptRecord(
        event_id=uuid.uuid4(), request_id=uuid.uuid4().hex, session_id="s", text=text,
        language="en", duration=1.0, model="tiny", occurred_at=datetime.now(UTC),
    )


async def test_a_non_superuser_owner_migrates_and_tenants_stay_isolated(
    managed_pg: ManagedPg,
) -> None:
    keys = DataKeys(Keyring([MasterKey.generate("k1")]))
    owner = await asyncpg.connect(managed_pg.owner_url)
    try:
        assert not await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = user")
        assert len(await apply_migrations(owner)) >= 4
        app_user = await ensure_app_login(owner, managed_pg.app_url)
        # a second run (every `mumu up` / `mumu migrate`) changes nothing and fails nothing
        assert await apply_migrations(owner) == []
        assert await ensure_app_login(owner, managed_pg.app_url) == app_user
        for migration in migrations():  # every file runs again as this owner, too
            async with owner.transaction():
                await owner.execute(migration.sql)
        a = await create_workspace(owner, keys, "A")
        b = await create_workspace(owner, keys, "B")
        # the owner policies let the admin CLI list every workspace without being superuser
        assert {w.name for w in await list_workspaces(owner)} == {"A", "B"}
    finally:
        await owner.close()

    pool = await asyncpg.create_pool(managed_pg.app_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        row = await pool.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert row is not None
        assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)
        # the SECURITY DEFINER lookups run as the non-superuser owner
        assert await resolve_api_key(pool, a.api_key) == a.workspace_id
        assert await resolve_api_key(pool, b.api_key) == b.workspace_id
        # so do the key-id lookups session tokens are checked with, and revoking
        key_a, key_b = await resolve_key(pool, a.api_key), await resolve_key(pool, b.api_key)
        assert key_a is not None and key_b is not None
        assert key_b.workspace_id == b.workspace_id
        ids = [key_a.key_id, key_b.key_id]
        assert await live_keys(pool, ids) == {key_a.key_id: a.workspace_id,
                                              key_b.key_id: b.workspace_id}
        owner = await asyncpg.connect(managed_pg.owner_url)
        try:
            assert await revoke_key(owner, b.workspace_id, key_b.key_id) == [key_b.key_id]
            assert await revoke_key(owner, a.workspace_id, key_b.key_id) == []  # not A's
        finally:
            await owner.close()
        assert await live_keys(pool, ids) == {key_a.key_id: a.workspace_id}
        assert await resolve_key(pool, b.api_key) is None

        await write_records(pool, keys, a.workspace_id, [said("alpha secret")])
        await write_records(pool, keys, b.workspace_id, [said("bravo secret")])
        assert [i.text for i in await session_history(pool, keys, a.workspace_id, "s")] == [
            "alpha secret"]

        async with workspace_tx(pool, a.workspace_id) as conn:
            assert await conn.fetchval(
                "SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1",
                b.workspace_id) == 0
            assert await conn.fetchval("SELECT count(*) FROM mumu.workspaces") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with workspace_tx(pool, a.workspace_id) as conn:
                await conn.execute(
                    "INSERT INTO mumu.sessions (workspace_id, id) VALUES ($1, 'evil')",
                    b.workspace_id)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("ALTER TABLE mumu.transcripts DISABLE ROW LEVEL SECURITY")
    finally:
        await pool.close()
