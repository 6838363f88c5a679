"""Tenant attack suite, connected as the application role (NOSUPERUSER NOBYPASSRLS)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from mumu.crypto import Keyring
from mumu.db.datakeys import DataKeys
from mumu.db.pool import workspace_tx
from mumu.db.records import TranscriptRecord, write_records
from mumu.db.workspaces import resolve_api_key, workspace_exists
from tests.pg_fixtures import WorkspaceFactory

TABLES = ("workspaces", "api_keys", "data_keys", "sessions", "transcripts", "answers")
VIEWS = ("requests",)
"""Views run as the caller (security_invoker) over tables of TABLES, so their RLS holds."""


def _record(text: str, session: str = "s1") -> TranscriptRecord:
    return TranscriptRecord(
        event_id=uuid.uuid4(), request_id=f"r-{uuid.uuid4().hex[:8]}", session_id=session,
        text=text, language="en", duration=1.0, model="tiny", occurred_at=datetime.now(UTC),
    )


@pytest.fixture
async def two_tenants(
    app_pool: asyncpg.Pool, keyring: Keyring, workspace: WorkspaceFactory
) -> tuple[str, str]:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    keys = DataKeys(keyring)
    await write_records(app_pool, keys, a, [_record("alpha secret")])
    await write_records(app_pool, keys, b, [_record("bravo secret"), _record("bravo two")])
    return a, b


async def test_the_app_role_is_not_superuser_and_cannot_bypass_rls(app_pool: asyncpg.Pool) -> None:
    row = await app_pool.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)


async def test_with_a_set_b_rows_are_invisible(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, b = two_tenants
    async with workspace_tx(app_pool, a) as conn:
        for table in TABLES + VIEWS:
            ws_col = "id" if table == "workspaces" else "workspace_id"
            seen = await conn.fetch(f"SELECT DISTINCT {ws_col}::text AS ws FROM mumu.{table}")
            assert {r["ws"] for r in seen} <= {a}, table
            hidden = await conn.fetchval(
                f"SELECT count(*) FROM mumu.{table} WHERE {ws_col} = $1", b
            )
            assert hidden == 0, table
        assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 1
        assert await conn.fetchval("SELECT count(*) FROM mumu.requests") == 1


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE mumu.transcripts SET language = 'xx' WHERE workspace_id = $1",
        "UPDATE mumu.transcripts SET language = 'xx' WHERE workspace_id <> $1",  # own rows
        "UPDATE mumu.transcripts SET workspace_id = $1",  # move own rows into B
        "DELETE FROM mumu.transcripts WHERE workspace_id = $1",
        "DELETE FROM mumu.transcripts WHERE workspace_id <> $1",
        "UPDATE mumu.answers SET cancelled = true WHERE workspace_id = $1",
        "DELETE FROM mumu.answers WHERE workspace_id = $1",
        "DELETE FROM mumu.answers WHERE workspace_id <> $1",
        "UPDATE mumu.api_keys SET revoked_at = now() WHERE workspace_id = $1",
        "UPDATE mumu.api_keys SET revoked_at = now() WHERE workspace_id <> $1",
        "UPDATE mumu.sessions SET workspace_id = $1",
        "DELETE FROM mumu.sessions WHERE workspace_id <> $1",
        "UPDATE mumu.data_keys SET wrapped = NULL WHERE workspace_id <> $1",
        "DELETE FROM mumu.data_keys WHERE workspace_id = $1",
        "TRUNCATE mumu.transcripts",
    ],
)
async def test_with_a_set_updating_or_deleting_any_row_is_refused(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, two_tenants: tuple[str, str],
    sql: str,
) -> None:
    """The application only inserts and reads: not even its own rows can be changed."""
    a, b = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with workspace_tx(app_pool, a) as conn:
            await conn.execute(sql, *([b] if "$1" in sql else []))
    assert await admin_conn.fetchval(
        "SELECT count(*) FROM mumu.transcripts WHERE language = 'en'") == 3


@pytest.mark.parametrize(
    ("table", "sql"),
    [
        ("sessions", "INSERT INTO mumu.sessions (workspace_id, id) VALUES ($1, 'evil')"),
        ("data_keys", "INSERT INTO mumu.data_keys (workspace_id, version, master_key_id, wrapped)"
                      " VALUES ($1, 99, 'k1', '\\x00')"),
        ("api_keys", "INSERT INTO mumu.api_keys (workspace_id, key_hash, prefix) "
                     "VALUES ($1, sha256('x'), 'x')"),
        ("transcripts", "INSERT INTO mumu.transcripts (workspace_id, event_id, request_id, "
                        "session_id, key_version, text, occurred_at) "
                        "VALUES ($1, gen_random_uuid(), 'r', 's', 1, '\\x00', now())"),
        ("answers", "INSERT INTO mumu.answers (workspace_id, event_id, request_id, session_id, "
                    "key_version, question, text, occurred_at) "
                    "VALUES ($1, gen_random_uuid(), 'r', 's', 1, '\\x00', '\\x00', now())"),
    ],
)
async def test_with_a_set_inserting_into_b_is_refused(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, two_tenants: tuple[str, str],
    table: str, sql: str,
) -> None:
    a, b = two_tenants
    before = await admin_conn.fetchval(f"SELECT count(*) FROM mumu.{table}")
    # refused by the policy's WITH CHECK (api_keys: by the missing INSERT privilege)
    with pytest.raises(asyncpg.InsufficientPrivilegeError,
                       match="row-level security|permission denied"):
        async with workspace_tx(app_pool, a) as conn:
            await conn.execute(sql, b)
    assert await admin_conn.fetchval(f"SELECT count(*) FROM mumu.{table}") == before


async def test_with_no_workspace_set_nothing_is_visible_or_writable(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, _ = two_tenants
    async with app_pool.acquire() as conn:
        for table in TABLES + VIEWS:
            assert await conn.fetchval(f"SELECT count(*) FROM mumu.{table}") == 0, table
        # an empty setting (what a pooled connection holds after a transaction) is the same
        await conn.execute("SELECT set_config('app.workspace_id', '', false)")
        assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO mumu.sessions (workspace_id, id) VALUES ($1, 'x')", a)


async def test_workspace_setting_does_not_leak_out_of_the_transaction(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, _ = two_tenants
    async with app_pool.acquire() as conn:
        async with workspace_tx(conn, a):
            assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 1
        assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 0


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE mumu.transcripts DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE mumu.transcripts NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON mumu.transcripts",
        "CREATE POLICY open ON mumu.transcripts USING (true)",
        "ALTER ROLE CURRENT_USER BYPASSRLS",
        "SET row_security = off",
    ],
)
async def test_the_app_role_cannot_switch_rls_off(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str], sql: str
) -> None:
    a, _ = two_tenants
    async with app_pool.acquire() as conn:
        with contextlib.suppress(asyncpg.PostgresError):  # refused: good
            await conn.execute(sql)
        # whatever the statement did, another workspace's rows stay invisible: the query
        # sees A's row only, or (row_security = off) is refused outright
        if sql.startswith("SET row_security"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with workspace_tx(conn, a):
                    await conn.fetchval("SELECT count(*) FROM mumu.transcripts")
        else:
            async with workspace_tx(conn, a):
                assert await conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 1


async def test_the_app_role_cannot_read_another_workspaces_keys(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, b = two_tenants
    async with workspace_tx(app_pool, a) as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM mumu.data_keys WHERE workspace_id = $1", b
        ) == 0
        assert await conn.fetchval("SELECT count(*) FROM mumu.data_keys") == 1
        assert await conn.fetchval("SELECT count(*) FROM mumu.api_keys") == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_pool.fetch("SELECT * FROM mumu.schema_migrations")


async def test_api_keys_resolve_to_their_workspace_only(
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, workspace: WorkspaceFactory
) -> None:
    a, key_a = await workspace("A")
    b, key_b = await workspace("B")
    assert await resolve_api_key(app_pool, key_a) == a
    assert await resolve_api_key(app_pool, key_b) == b
    assert await resolve_api_key(app_pool, key_a + "x") is None
    assert await resolve_api_key(app_pool, "not-a-key") is None
    stored = await admin_conn.fetch("SELECT key_hash, prefix FROM mumu.api_keys")
    for row in stored:
        assert key_a.encode() not in bytes(row["key_hash"])
        assert row["prefix"] not in (key_a, key_b)
    assert await workspace_exists(app_pool, a)
    assert not await workspace_exists(app_pool, str(uuid.uuid4()))
    assert not await workspace_exists(app_pool, "not-a-uuid")


async def test_the_requests_view_cannot_be_written(
    app_pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    a, b = two_tenants
    for sql in ("INSERT INTO mumu.requests (workspace_id, id, session_id) VALUES ($1, 'x', 's')",
                "DELETE FROM mumu.requests WHERE workspace_id = $1"):
        with pytest.raises(asyncpg.PostgresError, match="cannot|not updatable|permission"):
            async with workspace_tx(app_pool, a) as conn:
                await conn.execute(sql, b)


async def test_workspace_must_be_a_uuid(app_pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="is not a UUID"):
        async with workspace_tx(app_pool, "'; DROP TABLE mumu.transcripts; --"):
            pass
