"""Per-workspace data keys: created on demand, unwrapped with the master keyring.

Reads go through row-level security (the caller passes a connection inside
:func:`mumu.db.pool.workspace_tx`). Unwrapped keys are cached per wrapped blob, so a
rewrap or a new version is picked up by the next transaction and a shredded key is
never used again once its row is gone; :meth:`DataKeys.forget` drops a workspace's keys
from the cache (a shred's broadcast, or a shred found in the database).

A shredded workspace gets no new data key (``sql/0006``): :meth:`DataKeys.active`
raises :class:`WorkspaceShreddedError` until an operator re-enables it
(``mumu keys reenable``, :func:`mumu.db.keyadmin.reenable`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mumu.crypto import DataKey, Keyring
from mumu.crypto.errors import CryptoError
from mumu.crypto.keyring import KEY_BYTES


class DataKeyShreddedError(CryptoError):
    """The data key a row needs was destroyed (crypto-erasure): it can never be read."""


class WorkspaceShreddedError(Exception):
    """The workspace was crypto-shredded: nothing of it may be stored until an operator
    re-enables it (``mumu keys reenable <ws>``). Not a ``CryptoError``: no key is broken,
    the data must not be kept."""

    def __init__(self, workspace_id: str, shredded_at: datetime | None) -> None:
        when = f" at {shredded_at:%Y-%m-%d %H:%M:%S %Z}" if shredded_at is not None else ""
        super().__init__(
            f"workspace {workspace_id} was shredded{when}: its data is not stored "
            "(an operator can re-enable it: `mumu keys reenable <ws>`)"
        )
        self.workspace_id = workspace_id


SHREDDED_AT = (
    "SELECT shredded_at FROM mumu.workspace_shreds WHERE workspace_id = $1 "
    "AND reenabled_at IS NULL"
)
"""When the workspace was shredded, if it still is (no row: it is not)."""


async def shredded_at(conn: asyncpg.Connection, workspace_id: str) -> datetime | None:
    """When ``workspace_id`` was shredded, or None when it may store data."""
    found: datetime | None = await conn.fetchval(SHREDDED_AT, workspace_id)
    return found


@dataclass(frozen=True)
class KeyRow:
    version: int
    wrapped: bytes | None


class DataKeys:
    """Finds, creates and unwraps a workspace's data keys; bounded cache of unwrapped keys."""

    def __init__(self, keyring: Keyring, cache_size: int = 4096) -> None:
        self.keyring = keyring
        self._cache: OrderedDict[tuple[str, int, bytes], DataKey] = OrderedDict()
        self._cache_size = cache_size

    def _unwrap(self, workspace_id: str, version: int, wrapped: bytes) -> DataKey:
        cache_key = (workspace_id, version, wrapped)
        key = self._cache.get(cache_key)
        if key is None:
            material = self.keyring.unwrap(wrapped, workspace_id, version)
            key = DataKey.from_bytes(workspace_id, version, material)
            self._cache[cache_key] = key
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        return key

    def cached(self, workspace_id: str) -> int:
        """How many unwrapped keys of ``workspace_id`` this process holds in memory."""
        return sum(1 for k in self._cache if k[0] == workspace_id)

    def forget(self, workspace_id: str) -> int:
        """Drop every cached key of ``workspace_id`` (it was shredded); returns how many."""
        gone = [k for k in self._cache if k[0] == workspace_id]
        for k in gone:
            del self._cache[k]
        return len(gone)

    async def active(self, conn: asyncpg.Connection, workspace_id: str) -> DataKey:
        """The newest usable data key of the workspace; the first one is made on demand.
        A shredded workspace gets none: :class:`WorkspaceShreddedError` (and its cached
        keys are dropped). Locked as :meth:`newest` says."""
        key = await self.newest(conn, workspace_id)
        if key is not None:
            return key
        await self._refuse_if_shredded(conn, workspace_id)
        return await self.create(conn, workspace_id)

    async def _refuse_if_shredded(self, conn: asyncpg.Connection, workspace_id: str) -> None:
        when = await shredded_at(conn, workspace_id)
        if when is not None:
            self.forget(workspace_id)
            raise WorkspaceShreddedError(workspace_id, when)

    async def newest(self, conn: asyncpg.Connection, workspace_id: str) -> DataKey | None:
        """The newest usable data key of the workspace, or None (none yet, or all shredded).

        The key row stays locked (``FOR KEY SHARE``) until the caller's transaction ends:
        a shred (which takes ``FOR UPDATE``) waits for the rows sealed under it to commit,
        so it counts them, and no transaction can seal rows under a key shredded after it
        was read. Rewrapping (``FOR NO KEY UPDATE``) does not wait for writers.
        """
        row = await conn.fetchrow(
            "SELECT version, wrapped FROM mumu.data_keys WHERE workspace_id = $1 "
            "AND wrapped IS NOT NULL ORDER BY version DESC LIMIT 1 FOR KEY SHARE",
            workspace_id,
        )
        if row is None:
            return None
        return self._unwrap(workspace_id, row["version"], row["wrapped"])

    async def create(self, conn: asyncpg.Connection, workspace_id: str) -> DataKey:
        """Add a data key version (the next one); concurrent creators agree on one."""
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM mumu.data_keys WHERE workspace_id = $1",
            workspace_id,
        )
        material = secrets.token_bytes(KEY_BYTES)
        kid, wrapped = self.keyring.wrap(material, workspace_id, version)
        try:
            async with conn.transaction():  # a savepoint: the caller's transaction survives
                inserted = await conn.fetchval(
                    "INSERT INTO mumu.data_keys (workspace_id, version, master_key_id, "
                    "wrapped) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING "
                    "RETURNING version",
                    workspace_id, version, kid, wrapped,
                )
        except asyncpg.InsufficientPrivilegeError:
            # sql/0006 refused it: the workspace was shredded (by a shred that committed
            # after this transaction's first look); anything else is re-raised
            await self._refuse_if_shredded(conn, workspace_id)
            raise
        if inserted is None:  # another transaction made this version first: use theirs
            return await self.active(conn, workspace_id)
        return self._unwrap(workspace_id, version, wrapped)

    async def versions(
        self, conn: asyncpg.Connection, workspace_id: str, versions: set[int]
    ) -> dict[int, DataKey | DataKeyShreddedError]:
        """The keys of ``versions``; a shredded (or missing) one maps to its error."""
        rows = await conn.fetch(
            "SELECT version, wrapped, shredded_at FROM mumu.data_keys "
            "WHERE workspace_id = $1 AND version = ANY($2::int[])",
            workspace_id, sorted(versions),
        )
        found: dict[int, DataKey | DataKeyShreddedError] = {}
        for row in rows:
            if row["wrapped"] is None:
                self.forget(workspace_id)
                found[row["version"]] = DataKeyShreddedError(
                    f"data key v{row['version']} of workspace {workspace_id} was shredded at "
                    f"{row['shredded_at']:%Y-%m-%d %H:%M:%S %Z}; this data can never be "
                    "decrypted"
                )
            else:
                found[row["version"]] = self._unwrap(workspace_id, row["version"], row["wrapped"])
        for version in versions - found.keys():
            found[version] = DataKeyShreddedError(
                f"data key v{version} of workspace {workspace_id} does not exist; "
                "this data can never be decrypted"
            )
        return found
