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
                if done[migration.name] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
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

    The user is created when missing (with the URL's password) and refused when it is a
    superuser or has BYPASSRLS: row-level security would not apply to it.
    """
    user, password = login_of(app_dsn)
    row = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", user
    )
    if row is not None and (row["rolsuper"] or row["rolbypassrls"]):
        raise MigrationError(
            f"the application role {user!r} is a superuser or has BYPASSRLS; row-level "
            "security would not protect tenants. Use a plain role in MUMU_DATABASE_URL."
        )
    verb = "ALTER" if row is not None else "CREATE"
    options = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
    if password is not None:
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I WITH {options} PASSWORD %L', $1::text, $2::text)",
            user, scram_verifier(password),
        )
    else:
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I WITH {options}', $1::text)", user
        )
    await conn.execute(statement)
    if user != APP_GROUP_ROLE:
        grant = await conn.fetchval(
            "SELECT format('GRANT %I TO %I', $1::text, $2::text)", APP_GROUP_ROLE, user
        )
        await conn.execute(grant)
    return user
