"""Workspaces (tenants) and their API keys. Only a SHA-256 of each key is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mumu.db.datakeys import DataKeys
from mumu.db.pool import Db, workspace_tx

API_KEY_PREFIX = "mumu_"


@dataclass(frozen=True)
class NewWorkspace:
    workspace_id: str
    name: str
    api_key: str
    """Shown once; only its hash is stored."""


@dataclass(frozen=True)
class WorkspaceInfo:
    workspace_id: str
    name: str
    created_at: datetime
    api_keys: int
    data_key_versions: int


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def add_api_key(db: Db, workspace_id: str) -> str:
    """A new API key of the workspace; returns the key (shown once)."""
    key = new_api_key()
    async with workspace_tx(db, workspace_id) as conn:
        await conn.execute(
            "INSERT INTO mumu.api_keys (workspace_id, key_hash, prefix) VALUES ($1, $2, $3)",
            workspace_id, hash_api_key(key), key[: len(API_KEY_PREFIX) + 6],
        )
    return key


async def create_workspace(
    admin: asyncpg.Connection, data_keys: DataKeys, name: str
) -> NewWorkspace:
    """A workspace with its first data key and API key (run as the owner role)."""
    workspace_id = str(uuid.uuid4())
    async with workspace_tx(admin, workspace_id) as conn:
        await conn.execute(
            "INSERT INTO mumu.workspaces (id, name) VALUES ($1, $2)", workspace_id, name
        )
        await data_keys.create(conn, workspace_id)
    api_key = await add_api_key(admin, workspace_id)
    return NewWorkspace(workspace_id, name, api_key)


async def workspace_ids(admin: asyncpg.Connection) -> list[str]:
    """Every workspace id (owner role only: the application role sees none)."""
    rows = await admin.fetch("SELECT id FROM mumu.workspaces ORDER BY created_at, id")
    return [str(r["id"]) for r in rows]


async def list_workspaces(admin: asyncpg.Connection) -> list[WorkspaceInfo]:
    infos = []
    for ws in await workspace_ids(admin):
        async with workspace_tx(admin, ws) as conn:
            row = await conn.fetchrow(
                "SELECT w.name, w.created_at, "
                "(SELECT count(*) FROM mumu.api_keys k WHERE k.workspace_id = w.id "
                "AND revoked_at IS NULL) AS keys, "
                "(SELECT count(*) FROM mumu.data_keys d WHERE d.workspace_id = w.id "
                "AND wrapped IS NOT NULL) AS dks "
                "FROM mumu.workspaces w WHERE w.id = $1",
                ws,
            )
        if row is not None:
            infos.append(
                WorkspaceInfo(ws, row["name"], row["created_at"], row["keys"], row["dks"])
            )
    return infos


async def resolve_api_key(pool: Db, api_key: str) -> str | None:
    """The workspace id of a workspace API key, or None (unknown or revoked)."""
    if not api_key.startswith(API_KEY_PREFIX) or not api_key.isascii():
        return None  # keys are ASCII; anything else (even undecodable bytes) is unknown
    found = await pool.fetchval("SELECT mumu.resolve_api_key($1)", hash_api_key(api_key))
    return None if found is None else str(found)


async def workspace_exists(pool: Db, workspace_id: str) -> bool:
    """True when ``workspace_id`` is a UUID naming an existing workspace."""
    try:
        ws = uuid.UUID(workspace_id)
    except ValueError:
        return False
    return bool(await pool.fetchval("SELECT mumu.workspace_exists($1)", ws))
