"""The read API: a session's transcripts and answers, decrypted, in the caller's workspace."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from mumu.crypto import DataKey, Keyring, unseal
from mumu.db.datakeys import DataKeys, DataKeyShredded
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


def _decrypt(rows: list[dict[str, object]], keys: dict[int, DataKey | DataKeyShredded]
             ) -> list[HistoryItem]:
    items = []
    for row in rows:
        key = keys[int(str(row["key_version"]))]
        if isinstance(key, DataKeyShredded):
            raise key
        kind = str(row["kind"])
        row_id = str(row["event_id"])
        table = "transcripts" if kind == "transcript" else "answers"
        question = row["question"]
        items.append(HistoryItem(
            request_id=str(row["request_id"]),
            kind="transcript" if kind == "transcript" else "answer",
            text=unseal(key, bytes(row["text"]),  # type: ignore[arg-type]
                        table=table, column="text", row_id=row_id),
            question=None if question is None else unseal(
                key, bytes(question), table=table,  # type: ignore[arg-type]
                column="question", row_id=row_id),
            language=row["language"],  # type: ignore[arg-type]
            occurred_at=row["occurred_at"],  # type: ignore[arg-type]
            event_id=row_id,
        ))
    return items


async def session_history(
    pool: Db, keyring: Keyring | DataKeys, workspace_id: str, session_id: str
) -> list[HistoryItem]:
    """Transcripts and answers of ``session_id`` in ``workspace_id``, oldest first.

    Raises ``DataKeyShredded`` when the workspace's data was crypto-erased.
    """
    data_keys = keyring if isinstance(keyring, DataKeys) else DataKeys(keyring)
    async with workspace_tx(pool, workspace_id) as conn:
        rows = [dict(r) for r in await conn.fetch(_QUERY, session_id, workspace_id)]
        versions = {int(str(r["key_version"])) for r in rows}
        keys = await data_keys.versions(conn, workspace_id, versions) if versions else {}
    return await asyncio.to_thread(_decrypt, rows, keys)
