"""The migrator and the application login role: idempotence, revisions, refusals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mumu.db.migrate import (
    REVISED,
    MigrationError,
    apply_migrations,
    ensure_app_login,
    migrations,
)
from mumu.db.urls import with_user

TABLES = ("workspaces", "api_keys", "data_keys", "sessions", "transcripts", "answers",
          "workspace_shreds")
APP_PRIVILEGES = {
    "workspaces": {"SELECT"}, "api_keys": {"SELECT"}, "requests": {"SELECT"},
    "sessions": {"SELECT", "INSERT"}, "transcripts": {"SELECT", "INSERT"},
    "answers": {"SELECT", "INSERT"}, "data_keys": {"SELECT", "INSERT"},
    "workspace_shreds": {"SELECT"},
}


async def app_privileges(conn: asyncpg.Connection) -> dict[str, set[str]]:
    rows = await conn.fetch(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = 'mumu_app' AND table_schema = 'mumu'")
    found: dict[str, set[str]] = {}
    for r in rows:
        found.setdefault(r["table_name"], set()).add(r["privilege_type"])
    return found


async def test_migrations_are_idempotent_and_leave_the_app_role_least_privilege(
    admin_conn: asyncpg.Connection,
) -> None:
    assert await apply_migrations(admin_conn) == []
    names = await admin_conn.fetch("SELECT name FROM mumu.schema_migrations ORDER BY name")
    assert [r["name"] for r in names] == [
        "0001_schema", "0002_row_level_security", "0003_requests_view", "0004_least_privilege",
        "0006_shred_final", "0007_api_key_ids"]
    for table in TABLES:
        row = await admin_conn.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = ('mumu.' || $1)::regclass", table,
        )
        assert row is not None
        assert (row["relrowsecurity"], row["relforcerowsecurity"]) == (True, True), table
    options = await admin_conn.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'mumu.requests'::regclass")
    assert "security_invoker=true" in options
    assert await app_privileges(admin_conn) == APP_PRIVILEGES
    columns = await admin_conn.fetch(
        "SELECT table_name, column_name FROM information_schema.column_privileges "
        "WHERE grantee = 'mumu_app' AND privilege_type = 'UPDATE'")
    assert [(r["table_name"], r["column_name"]) for r in columns] == [
        ("data_keys", "rewrapped_at")]  # for the FOR KEY SHARE lock on the active key


async def test_every_migration_file_can_run_again_in_order(
    admin_conn: asyncpg.Connection,
) -> None:
    """Each file promises "every statement can run again"; 0002 once failed after 0003."""
    for migration in migrations():
        async with admin_conn.transaction():
            await admin_conn.execute(migration.sql)
    assert await app_privileges(admin_conn) == APP_PRIVILEGES
    kind = await admin_conn.fetchval("SELECT relkind FROM pg_class "
                                     "WHERE oid = 'mumu.requests'::regclass")
    assert kind == b"v"


async def test_an_edited_applied_migration_is_refused(
    admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    for m in migrations():
        (tmp_path / f"{m.name}.sql").write_text(m.sql)
    first = tmp_path / "0001_schema.sql"
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="0001_schema changed after it was applied"):
        await apply_migrations(admin_conn, tmp_path)


async def test_a_database_migrated_with_an_earlier_revision_is_accepted(
    admin_conn: asyncpg.Connection,
) -> None:
    """Dev databases applied 0001/0002 before their revision: they must keep migrating."""
    for name, earlier in REVISED.items():
        (old,) = earlier
        await admin_conn.execute(
            "UPDATE mumu.schema_migrations SET checksum = $2 WHERE name = $1", name, old)
    assert await apply_migrations(admin_conn) == []
    current = {m.name: m.checksum for m in migrations()}
    recorded = await admin_conn.fetch("SELECT name, checksum FROM mumu.schema_migrations")
    assert {r["name"]: r["checksum"] for r in recorded} == current


@pytest.fixture
async def role(admin_conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A role of the test cluster, dropped afterwards (its grants and objects with it)."""
    name = f"mumu_t_role_{uuid.uuid4().hex[:8]}"
    await admin_conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        await admin_conn.execute(f"DROP OWNED BY {name} CASCADE")
        await admin_conn.execute(f"DROP ROLE {name}")


@pytest.mark.parametrize(
    ("setup", "refusal"),
    [
        ("ALTER ROLE {role} SUPERUSER", "is a superuser"),
        ("ALTER ROLE {role} BYPASSRLS", "is a BYPASSRLS role"),
        ("ALTER ROLE {role} CREATEROLE", "is a CREATEROLE role"),
        ("ALTER TABLE mumu.transcripts OWNER TO {role}", "is an owner of schema mumu"),
        ("CREATE TABLE mumu.{role} (x int); ALTER TABLE mumu.{role} OWNER TO {role}",
         "is an owner of schema mumu"),
        ("GRANT postgres TO {role}", "a member of 'postgres', a superuser"),
        ("CREATE ROLE {role}_byp NOLOGIN BYPASSRLS; GRANT {role}_byp TO {role}",
         "a member of '{role}_byp', a BYPASSRLS role"),
        ("CREATE ROLE {role}_own NOLOGIN; ALTER TABLE mumu.answers OWNER TO {role}_own; "
         "CREATE ROLE {role}_mid NOLOGIN; GRANT {role}_own TO {role}_mid; "
         "GRANT {role}_mid TO {role}",
         "a member of '{role}_own', an owner"),
        ("CREATE ROLE {role}_byp NOLOGIN BYPASSRLS; GRANT {role}_byp TO mumu_app",
         "'mumu_app' is a member of '{role}_byp', a BYPASSRLS role"),
    ],
    ids=["superuser", "bypassrls", "createrole", "owns-a-table", "owns-another-object",
         "member-of-superuser", "member-of-bypassrls", "member-of-owner-via-another",
         "app-group-role-member-of-bypassrls"],
)
async def test_an_unsafe_application_user_is_refused(
    admin_conn: asyncpg.Connection, pg_admin_url: str, role: str, setup: str, refusal: str,
) -> None:
    await admin_conn.execute(setup.format(role=role))
    try:
        with pytest.raises(MigrationError, match=refusal.format(role=role)):
            await ensure_app_login(admin_conn, with_user(pg_admin_url, role, "pw"))
        assert not await admin_conn.fetchval(  # not granted (nor given LOGIN attributes)
            "SELECT count(*) FROM pg_auth_members "
            "WHERE member = $1::regrole AND roleid = 'mumu_app'::regrole", role)
    finally:
        await admin_conn.execute("ALTER TABLE mumu.transcripts OWNER TO CURRENT_USER; "
                                 "ALTER TABLE mumu.answers OWNER TO CURRENT_USER")
        for extra in ("byp", "own", "mid"):
            await admin_conn.execute(f"DROP OWNED BY {role} CASCADE")
            exists = await admin_conn.fetchval(
                "SELECT true FROM pg_roles WHERE rolname = $1", f"{role}_{extra}")
            if exists:
                await admin_conn.execute(f"DROP OWNED BY {role}_{extra} CASCADE")
                await admin_conn.execute(f"DROP ROLE {role}_{extra}")


async def test_the_owner_itself_is_refused_as_application_user(
    admin_conn: asyncpg.Connection, pg_admin_url: str,
) -> None:
    owner = await admin_conn.fetchval("SELECT current_user")
    with pytest.raises(MigrationError, match="is the owner role running the migrations"):
        await ensure_app_login(admin_conn, with_user(pg_admin_url, owner, "pw"))


async def test_a_plain_application_user_is_accepted(
    admin_conn: asyncpg.Connection, pg_admin_url: str, role: str,
) -> None:
    assert await ensure_app_login(admin_conn, with_user(pg_admin_url, role, "pw")) == role
    assert await admin_conn.fetchval("SELECT pg_has_role($1, 'mumu_app', 'MEMBER')", role)
