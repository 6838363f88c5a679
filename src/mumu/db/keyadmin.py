"""Key operations of ``mumu keys``: rewrap, new data keys, re-encrypt, shred, re-enable.

All of them run as the owner role, one workspace (and one short transaction) at a
time, so the stages keep writing while they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from mumu.crypto import DataKey, seal, unseal
from mumu.db.datakeys import DataKeys, DataKeyShreddedError, shredded_at
from mumu.db.pool import workspace_tx
from mumu.db.workspaces import workspace_ids

Progress = Callable[[str, int], None]
"""Called with (workspace id, rows done so far in it)."""


@dataclass(frozen=True)
class RotateReport:
    workspaces: int
    rewrapped: int
    new_data_keys: int
    primary: str


@dataclass(frozen=True)
class ShredReport:
    workspace_id: str
    data_keys: int
    transcripts: int
    answers: int
    master_keys: tuple[str, ...] = ()
    """Master keys that wrapped the shredded keys: copies of those wrapped keys outlive the
    shred in WAL, replicas, backups and dumps until these master keys are destroyed."""

    @property
    def rows(self) -> int:
        return self.transcripts + self.answers


async def rotate(admin: asyncpg.Connection, data_keys: DataKeys, *, new_data_keys: bool
                 ) -> RotateReport:
    """Rewrap every data key not wrapped by the primary master key; optionally add a new
    data-key version per workspace (new rows use it; old rows keep decrypting)."""
    keyring = data_keys.keyring
    rewrapped = created = 0
    workspaces = await workspace_ids(admin)
    for ws in workspaces:
        async with workspace_tx(admin, ws) as conn:
            rows = await conn.fetch(
                "SELECT version, wrapped FROM mumu.data_keys WHERE workspace_id = $1 "
                "AND wrapped IS NOT NULL AND master_key_id <> $2 FOR NO KEY UPDATE",
                ws, keyring.primary_id,
            )
            for row in rows:
                material = keyring.unwrap(row["wrapped"], ws, row["version"])
                kid, wrapped = keyring.wrap(material, ws, row["version"])
                await conn.execute(
                    "UPDATE mumu.data_keys SET master_key_id = $3, wrapped = $4, "
                    "rewrapped_at = now() WHERE workspace_id = $1 AND version = $2",
                    ws, row["version"], kid, wrapped,
                )
                rewrapped += 1
            if new_data_keys and await shredded_at(conn, ws) is None:
                await data_keys.create(conn, ws)  # a shredded workspace gets none (0006)
                created += 1
    return RotateReport(len(workspaces), rewrapped, created, keyring.primary_id)


_TABLES = {"transcripts": ("text",), "answers": ("question", "text")}


async def reencrypt(admin: asyncpg.Connection, data_keys: DataKeys, *, batch: int = 500,
                    progress: Progress | None = None) -> int:
    """Rewrite rows sealed under older (still readable) data keys with the newest one.

    Resumable: each batch commits on its own and the next run starts with what is left.
    A workspace without a usable data key (every key shredded) is skipped: its rows can
    never be read, and no new key is made for it. Returns the number of rows rewritten.
    """
    total = 0
    for ws in await workspace_ids(admin):
        done = 0
        while True:
            async with workspace_tx(admin, ws) as conn:
                active = await data_keys.newest(conn, ws)
                if active is None:
                    break
                moved = 0
                for table, columns in _TABLES.items():
                    moved += await _reencrypt_batch(conn, data_keys, ws, active, table=table,
                                                    columns=columns, batch=batch)
            done += moved
            if progress is not None:
                progress(ws, done)
            if moved == 0:
                break
        total += done
    return total


async def _reencrypt_batch(conn: asyncpg.Connection, data_keys: DataKeys, ws: str,
                           active: DataKey, *, table: str, columns: tuple[str, ...],
                           batch: int) -> int:
    cols = ", ".join(columns)
    rows = await conn.fetch(
        f"SELECT t.event_id, t.key_version, {cols} FROM mumu.{table} t "  # noqa: S608
        "JOIN mumu.data_keys k ON k.workspace_id = t.workspace_id "
        "AND k.version = t.key_version AND k.wrapped IS NOT NULL "
        "WHERE t.workspace_id = $1 AND t.key_version < $2 LIMIT $3 FOR UPDATE OF t SKIP LOCKED",
        ws, active.version, batch,
    )
    if not rows:
        return 0
    keys = await data_keys.versions(conn, ws, {r["key_version"] for r in rows})
    updates = []
    for row in rows:
        old = keys[row["key_version"]]
        if isinstance(old, DataKeyShreddedError):  # shredded since the select: unreadable
            continue
        row_id = str(row["event_id"])
        sealed = [
            seal(active, unseal(old, row[c], table=table, column=c, row_id=row_id),
                 table=table, column=c, row_id=row_id)
            for c in columns
        ]
        updates.append((ws, row["event_id"], active.version, *sealed))
    sets = ", ".join(f"{c} = ${i + 4}" for i, c in enumerate(columns))
    await conn.executemany(
        f"UPDATE mumu.{table} SET key_version = $3, {sets} "  # noqa: S608
        "WHERE workspace_id = $1 AND event_id = $2",
        updates,
    )
    return len(updates)


async def shred(admin: asyncpg.Connection, workspace_id: str) -> ShredReport:
    """Destroy every data key of the workspace in the database: mumu can never decrypt its
    rows again, and it stores nothing more of the workspace (no new data key is made)
    until :func:`reenable`. Idempotent: a second run finds no key and changes nothing.

    Then ``VACUUM mumu.data_keys``, so the old row versions holding the
    wrapped keys leave the live table (a transaction still open may keep them a while).
    Copies in WAL, replicas, backups and dumps stay until the master keys named in the
    report are retired and destroyed: only that makes the erasure final.
    """
    async with workspace_tx(admin, workspace_id) as conn:
        if not await conn.fetchval("SELECT mumu.workspace_exists($1)", workspace_id):
            raise LookupError(f"workspace {workspace_id} does not exist")
        # FOR UPDATE waits for every writer holding a key FOR KEY SHARE (see
        # DataKeys.newest): their rows are committed, hence counted below
        locked = await conn.fetch(
            "SELECT version, master_key_id FROM mumu.data_keys WHERE workspace_id = $1 "
            "AND wrapped IS NOT NULL FOR UPDATE", workspace_id,
        )
        await conn.execute(
            "UPDATE mumu.data_keys SET wrapped = NULL, master_key_id = NULL, "
            "shredded_at = now() WHERE workspace_id = $1 AND wrapped IS NOT NULL",
            workspace_id,
        )
        # in the same transaction: no writer sees the keys gone and the workspace open
        await conn.execute(
            "INSERT INTO mumu.workspace_shreds (workspace_id) VALUES ($1) "
            "ON CONFLICT (workspace_id) DO UPDATE SET shredded_at = now(), "
            "reenabled_at = NULL WHERE mumu.workspace_shreds.reenabled_at IS NOT NULL",
            workspace_id,
        )
        versions = [r["version"] for r in locked]  # the rows locked are the rows updated
        transcripts = await conn.fetchval(
            "SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1 "
            "AND key_version = ANY($2::int[])", workspace_id, versions,
        )
        answers = await conn.fetchval(
            "SELECT count(*) FROM mumu.answers WHERE workspace_id = $1 "
            "AND key_version = ANY($2::int[])", workspace_id, versions,
        )
    await admin.execute("VACUUM mumu.data_keys")
    masters = tuple(sorted({r["master_key_id"] for r in locked}))
    return ShredReport(workspace_id, len(versions), transcripts, answers, masters)


@dataclass(frozen=True)
class ReenableReport:
    workspace_id: str
    data_key_version: int
    """The new data key: rows stored from now on are sealed under it."""


async def reenable(admin: asyncpg.Connection, data_keys: DataKeys, workspace_id: str
                   ) -> ReenableReport:
    """Let a shredded workspace store data again, under a new data key made now.

    What was shredded stays unreadable. ``LookupError`` when the workspace does not
    exist; ``ValueError`` when it is not shredded (nothing to re-enable)."""
    async with workspace_tx(admin, workspace_id) as conn:
        if not await conn.fetchval("SELECT mumu.workspace_exists($1)", workspace_id):
            raise LookupError(f"workspace {workspace_id} does not exist")
        reopened = await conn.fetchval(
            "UPDATE mumu.workspace_shreds SET reenabled_at = now() WHERE workspace_id = $1 "
            "AND reenabled_at IS NULL RETURNING workspace_id", workspace_id,
        )
        if reopened is None:
            raise ValueError(f"workspace {workspace_id} is not shredded")
        key = await data_keys.create(conn, workspace_id)
    return ReenableReport(workspace_id, key.version)
