"""The read API: a session's transcripts and answers, decrypted, in the caller's workspace."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel

from mumu.crypto import DataKey, Keyring, unseal
from mumu.db.datakeys import DataKeys, DataKeyShreddedError
from mumu.db.pool import Db, workspace_tx


class HistoryItem(BaseModel):
    """One stored transcript or answer of a session, decrypted."""

    request_id: str
    kind: Literal["transcript", "answer"]
    text: str
    language: str | None
    occurred_at: datetime
    event_id: str
    question: str | None = None
    """The question an answer answers (answers only)."""


_QUERY = """
SELECT 'transcript' AS kind, event_id, request_id, key_version, NULL::bytea AS question,
       text, language, occurred_at
  FROM mumu.transcripts WHERE workspace_id = $2 AND session_id = $1
UNION ALL
SELECT 'answer', event_id, request_id, key_version, question, text, language, occurred_at
  FROM mumu.answers WHERE workspace_id = $2 AND session_id = $1
ORDER BY occurred_at, kind DESC, event_id
"""


def _decrypt(rows: list[asyncpg.Record], keys: dict[int, DataKey | DataKeyShreddedError]
             ) -> list[HistoryItem]:
    items = []
    for row in rows:
        key = keys[row["key_version"]]
        if isinstance(key, DataKeyShreddedError):
            raise key
        kind = row["kind"]
        row_id = str(row["event_id"])
        table = "transcripts" if kind == "transcript" else "answers"
        question = row["question"]
        items.append(HistoryItem(
            request_id=row["request_id"],
            kind=kind,
            text=unseal(key, row["text"], table=table, column="text", row_id=row_id),
            question=None if question is None else unseal(
                key, question, table=table, column="question", row_id=row_id),
            language=row["language"],
            occurred_at=row["occurred_at"],
            event_id=row_id,
        ))
    return items


async def session_history(
    pool: Db, keyring: Keyring | DataKeys, workspace_id: str, session_id: str
) -> list[HistoryItem]:
    """Transcripts and answers of ``session_id`` in ``workspace_id``, oldest first.

    Raises ``DataKeyShreddedError`` when the workspace's data was crypto-erased.
    """
    data_keys = keyring if isinstance(keyring, DataKeys) else DataKeys(keyring)
    async with workspace_tx(pool, workspace_id) as conn:
        rows = await conn.fetch(_QUERY, session_id, workspace_id)
        versions: set[int] = {r["key_version"] for r in rows}
        keys = await data_keys.versions(conn, workspace_id, versions) if versions else {}
    return await asyncio.to_thread(_decrypt, rows, keys)
