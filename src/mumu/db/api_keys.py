"""API keys by id: which key a session token was issued for, whether it is still live,
and revoking one (``mumu workspace api-key``). Keys themselves are stored hashed
(``mumu.db.workspaces``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mumu.db.pool import Db, workspace_tx
from mumu.db.workspaces import API_KEY_PREFIX, hash_api_key

PREFIX_CHARS = len(API_KEY_PREFIX) + 6
"""How much of a key is stored in clear (``mumu_`` and 6 characters): it names the key
in listings and keys the failed-key limiter, and says nothing that helps guess it."""


@dataclass(frozen=True)
class KeyOwner:
    key_id: str
    workspace_id: str


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class AmbiguousKeyError(RuntimeError):
    """More than one key of the workspace matches what was given."""


def key_prefix(api_key: str) -> str:
    """The stored prefix of ``api_key`` (or of whatever a client sent as one), printable."""
    head = api_key[:PREFIX_CHARS]
    return head if head.isascii() and head.isprintable() else head.encode(
        "ascii", "backslashreplace").decode()[:PREFIX_CHARS * 4]


async def resolve_key(pool: Db, api_key: str) -> KeyOwner | None:
    """The id and workspace of a live API key, or None (unknown, revoked or deleted)."""
    if not api_key.startswith(API_KEY_PREFIX) or not api_key.isascii():
        return None  # keys are ASCII; anything else (even undecodable bytes) is unknown
    row = await pool.fetchrow("SELECT key_id, workspace_id FROM mumu.resolve_api_key_id($1)",
                              hash_api_key(api_key))
    return None if row is None else KeyOwner(str(row["key_id"]), str(row["workspace_id"]))


async def live_keys(pool: Db, key_ids: Sequence[str]) -> dict[str, str]:
    """Key id → workspace of those of ``key_ids`` that are live; ids that are not UUIDs
    are not live."""
    ids = []
    for key_id in key_ids:
        try:
            ids.append(uuid.UUID(key_id))
        except ValueError:
            continue
    if not ids:
        return {}
    rows = await pool.fetch("SELECT key_id, workspace_id FROM mumu.live_api_keys($1)", ids)
    return {str(r["key_id"]): str(r["workspace_id"]) for r in rows}


async def list_keys(admin: asyncpg.Connection, workspace_id: str) -> list[ApiKeyInfo]:
    """Every API key of a workspace, revoked ones included (owner role)."""
    async with workspace_tx(admin, workspace_id) as conn:
        rows = await conn.fetch(
            "SELECT id, prefix, created_at, revoked_at FROM mumu.api_keys "
            "WHERE workspace_id = $1 ORDER BY created_at, id", workspace_id)
    return [ApiKeyInfo(str(r["id"]), r["prefix"], r["created_at"], r["revoked_at"])
            for r in rows]


async def revoke_key(admin: asyncpg.Connection, workspace_id: str, which: str) -> list[str]:
    """Revoke the key of ``workspace_id`` named by ``which``: its id, its prefix or the
    whole key. Returns the ids revoked now (empty: no live key matches);
    ``AmbiguousKeyError`` when a prefix names several live keys."""
    async with workspace_tx(admin, workspace_id) as conn:
        try:
            by_id: uuid.UUID | None = uuid.UUID(which)
        except ValueError:
            by_id = None
        arg: uuid.UUID | bytes | str
        if by_id is not None:
            where, arg = "id = $2", by_id
        elif len(which) > PREFIX_CHARS:
            where, arg = "key_hash = $2", hash_api_key(which)
        else:
            where, arg = "prefix = $2", which
        matches = await conn.fetch(
            f"SELECT id FROM mumu.api_keys WHERE workspace_id = $1 AND {where} "  # noqa: S608
            "AND revoked_at IS NULL FOR UPDATE", workspace_id, arg)
        if len(matches) > 1:
            raise AmbiguousKeyError(
                f"{len(matches)} live keys start with {which!r}: give the key id instead")
        for r in matches:
            await conn.execute("UPDATE mumu.api_keys SET revoked_at = now() WHERE id = $1",
                               r["id"])
    return [str(r["id"]) for r in matches]
