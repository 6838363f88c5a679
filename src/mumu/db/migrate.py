"""Ordered, idempotent migrations from ``sql/`` and the application login role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from mumu.resources import resource_dir

log = logging.getLogger(__name__)

APP_GROUP_ROLE = "mumu_app"
_LOCK_KEY = 0x6D756D75  # "mumu": one migrator at a time
_TRACKING = """
CREATE SCHEMA IF NOT EXISTS mumu;
CREATE TABLE IF NOT EXISTS mumu.schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """A migration changed after it was applied, or the app role is unsafe."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(directory: Path | None = None) -> list[Migration]:
    folder = directory or resource_dir("sql")
    files = sorted(p for p in folder.glob("[0-9][0-9][0-9][0-9]_*.sql") if p.is_file())
    return [Migration(p.stem, p.read_text()) for p in files]


REVISED: dict[str, frozenset[str]] = {
    # 0001 ALTERed mumu_app's attributes, which needs a superuser; now it only checks them
    "0001_schema": frozenset(
        {"60faef79146d71832d62f175568b51a4e02233b5f47f4c88cca784e90c4ff43f"}),
    # 0002 could not run again after 0003 (requests became a view); now it skips views
    "0002_row_level_security": frozenset(
        {"9d64fad66bd691aa3df6c60e13763d7c3a06534dea563e2f0062a026c321fcab"}),
}
"""Earlier checksums of migrations that were revised after release, per migration.

A database that applied the earlier text is accepted: its recorded checksum is moved to
the current one without running the file again. Only revisions whose new text has the
same effect on such a database belong here (both above only drop a statement that had
already succeeded there, or add a guard); any other edit is refused, as ever."""


async def apply_migrations(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply what is not applied yet, each in its own transaction; returns their names."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_TRACKING)
        rows = await conn.fetch("SELECT name, checksum FROM mumu.schema_migrations")
        done = {r["name"]: r["checksum"] for r in rows}
        for migration in migrations(directory):
            if migration.name in done:
                await _check_applied(conn, migration, done[migration.name])
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO mumu.schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name, migration.checksum,
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _check_applied(conn: asyncpg.Connection, migration: Migration, checksum: str) -> None:
    if checksum == migration.checksum:
        return
    if checksum not in REVISED.get(migration.name, frozenset()):
        raise MigrationError(
            f"migration {migration.name} changed after it was applied; "
            "add a new migration instead of editing an applied one"
        )
    await conn.execute(
        "UPDATE mumu.schema_migrations SET checksum = $2 WHERE name = $1",
        migration.name, migration.checksum,
    )
    log.info("migration %s was applied in an earlier revision; recorded the current one",
             migration.name)


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier (RFC 5802/7677): PostgreSQL stores it as is, so the
    plaintext password never reaches the server (or its statement log)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored_key).decode()}:{b64(server_key).decode()}")


def login_of(dsn: str) -> tuple[str, str | None]:
    """(user, password) named by a PostgreSQL URL."""
    parts = urlsplit(dsn)
    if not parts.username:
        raise MigrationError("MUMU_DATABASE_URL names no user (want postgresql://user:pw@...)")
    password = unquote(parts.password) if parts.password else None
    return unquote(parts.username), password


async def ensure_app_login(conn: asyncpg.Connection, app_dsn: str) -> str:
    """Make the user of ``app_dsn`` a member of ``mumu_app`` that can log in.

    The user is created when missing (``NOSUPERUSER NOBYPASSRLS``, with the URL's
    password). An existing user is checked, never given attributes (changing SUPERUSER or
    BYPASSRLS needs a superuser, which a managed PostgreSQL owner is not) and refused when
    row-level security would not bind it (see :func:`refuse_unsafe_app_user`).
    """
    user, password = login_of(app_dsn)
    exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", user)
    await refuse_unsafe_app_user(conn, user)
    await refuse_unsafe_app_user(conn, APP_GROUP_ROLE)  # the user inherits its memberships
    if exists:
        verb, options = "ALTER", "LOGIN"
    else:
        verb, options = "CREATE", "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
    if password is not None:
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I WITH {options} PASSWORD %L', $1::text, $2::text)",
            user, scram_verifier(password),
        )
    else:
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I WITH {options}', $1::text)", user
        )
    try:
        await conn.execute(statement)
        if user != APP_GROUP_ROLE:
            grant = await conn.fetchval(
                "SELECT format('GRANT %I TO %I', $1::text, $2::text)", APP_GROUP_ROLE, user
            )
            await conn.execute(grant)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(
            f"the owner role cannot set up the application role {user!r}: {exc}. It needs "
            f"CREATEROLE and ADMIN OPTION on {user!r} and {APP_GROUP_ROLE!r} (it has both "
            "when it created them)"
        ) from exc
    return user


_OWNERS = """
SELECT nspowner AS owner FROM pg_namespace WHERE nspname = 'mumu'
UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'mumu'
UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'mumu'
UNION SELECT oid FROM pg_roles WHERE rolname = current_user
"""
"""Roles that own schema ``mumu`` or anything in it, and the role running migrations:
an owner can switch row-level security off (and the owner policies let it see every
workspace's registry)."""

_UNSAFE = f"""
SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole
  FROM pg_roles r
 WHERE (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.oid IN ({_OWNERS}))
   AND pg_has_role($1, r.oid, 'MEMBER')
 ORDER BY r.rolname = $1 DESC, r.rolname
 LIMIT 1
"""  # noqa: S608 - constant SQL
"""The user itself first: a superuser is a member of every role."""


async def refuse_unsafe_app_user(conn: asyncpg.Connection, user: str) -> None:
    """``MigrationError`` when row-level security would not bind ``user``.

    Refused: a superuser or BYPASSRLS role, the role running the migrations, a role
    owning schema ``mumu`` or anything in it, and a member (directly or through other
    roles) of any role of these kinds - it could ``SET ROLE`` to it.
    """
    if user == await conn.fetchval("SELECT current_user"):
        raise MigrationError(
            f"the application role {user!r} is the owner role running the migrations; "
            "give MUMU_DATABASE_URL its own plain user"
        )
    if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", user):
        return
    row = await conn.fetchrow(_UNSAFE, user)
    if row is not None:
        what = ("a superuser" if row["rolsuper"] else "a BYPASSRLS role" if row["rolbypassrls"]
                # CREATEROLE can grant itself an owner role (PostgreSQL <= 15) and SET ROLE
                else "a CREATEROLE role" if row["rolcreaterole"]
                else "an owner of schema mumu or of objects in it")
        whose = "" if row["rolname"] == user else f"a member of {row['rolname']!r}, "
        raise MigrationError(
            f"the application role {user!r} is {whose}{what}: row-level security would not "
            "protect tenants. Use a plain role in MUMU_DATABASE_URL."
        )
