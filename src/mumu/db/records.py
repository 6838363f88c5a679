"""Writing transcripts and answers: encrypted, workspace-scoped, one transaction per batch.

Rows are upserted on ``(workspace_id, event_id)`` (``ON CONFLICT DO NOTHING``): a
redelivered or replayed event never makes a second row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mumu.crypto import DataKey, seal
from mumu.db.datakeys import DataKeys
from mumu.db.pool import Db, workspace_tx


class UnknownWorkspaceError(Exception):
    """The workspace of a batch does not exist."""


@dataclass(frozen=True)
class TranscriptRecord:
    event_id: uuid.UUID
    request_id: str
    session_id: str
    text: str
    language: str | None
    duration: float | None
    model: str | None
    occurred_at: datetime

    kind = "transcript"


@dataclass(frozen=True)
class AnswerRecord:
    event_id: uuid.UUID
    request_id: str
    session_id: str
    question: str
    text: str
    language: str | None
    model: str | None
    cancelled: bool
    prompt_tokens: int
    completion_tokens: int
    total_seconds: float | None
    occurred_at: datetime

    kind = "answer"


Record = TranscriptRecord | AnswerRecord

INSERT_TRANSCRIPT = """
INSERT INTO mumu.transcripts (workspace_id, event_id, request_id, session_id, key_version,
                              text, language, duration, model, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
INSERT_ANSWER = """
INSERT INTO mumu.answers (workspace_id, event_id, request_id, session_id, key_version,
                          question, text, language, model, cancelled, prompt_tokens,
                          completion_tokens, total_seconds, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
INSERT_SESSIONS_AND_REQUESTS = """
WITH sessions AS (
    INSERT INTO mumu.sessions (workspace_id, id)
    SELECT $1, s FROM unnest($2::text[]) AS s
    ON CONFLICT DO NOTHING
)
INSERT INTO mumu.requests (workspace_id, id, session_id)
SELECT $1, r, s FROM unnest($3::text[], $4::text[]) AS u(r, s)
ON CONFLICT DO NOTHING
"""

Row = tuple[object, ...]


class KnownIndex:
    """Sessions and requests already committed by this process (bounded, oldest out).

    Only filled after a commit, so a rolled-back batch never hides a missing row; a
    miss only costs an ``ON CONFLICT DO NOTHING`` upsert.
    """

    def __init__(self, size: int = 65_536) -> None:
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._size = size

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._seen

    def add(self, keys: Iterable[tuple[str, str, str]]) -> None:
        for key in keys:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


Protect = Callable[[str, str, str, str], object]
"""(table, column, row id, plaintext) → the stored value of a text column."""


def table_rows(workspace_id: str, version: int, records: Sequence[Record], protect: Protect
               ) -> tuple[list[Row], list[Row]]:
    """(transcript rows, answer rows) in the column order of the INSERT statements."""
    ws = workspace_id
    transcripts: list[Row] = []
    answers: list[Row] = []
    for r in records:
        row_id = str(r.event_id)
        if isinstance(r, TranscriptRecord):
            text = protect("transcripts", "text", row_id, r.text)
            transcripts.append((ws, r.event_id, r.request_id, r.session_id, version, text,
                                r.language, r.duration, r.model, r.occurred_at))
        else:
            question = protect("answers", "question", row_id, r.question)
            text = protect("answers", "text", row_id, r.text)
            answers.append((ws, r.event_id, r.request_id, r.session_id, version, question, text,
                            r.language, r.model, r.cancelled, r.prompt_tokens,
                            r.completion_tokens, r.total_seconds, r.occurred_at))
    return transcripts, answers


def encrypt_rows(key: DataKey, records: Sequence[Record]) -> tuple[list[Row], list[Row]]:
    """Rows with every text column sealed under ``key`` (bound to its table/column/row)."""

    def sealed(table: str, column: str, row_id: str, text: str) -> bytes:
        return seal(key, text, table=table, column=column, row_id=row_id)

    return table_rows(key.workspace_id, key.version, records, sealed)


async def write_records(
    db: Db, data_keys: DataKeys, workspace_id: str, records: Sequence[Record],
    known: KnownIndex | None = None,
) -> None:
    """Encrypt and upsert ``records`` of one workspace in one transaction."""
    sessions = sorted(s for s in {r.session_id for r in records}
                      if known is None or (workspace_id, "s", s) not in known)
    requests = sorted({(r.request_id, r.session_id) for r in records
                       if known is None or (workspace_id, "r", r.request_id) not in known})
    async with workspace_tx(db, workspace_id) as conn:
        try:
            key = await data_keys.active(conn, workspace_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise UnknownWorkspaceError(f"workspace {workspace_id} does not exist") from exc
        # encryption runs in a thread while the database indexes sessions and requests
        encrypting = asyncio.ensure_future(asyncio.to_thread(encrypt_rows, key, records))
        try:
            if sessions or requests:
                await conn.execute(
                    INSERT_SESSIONS_AND_REQUESTS, workspace_id, sessions,
                    [r for r, _ in requests], [s for _, s in requests],
                )
        finally:
            transcripts, answers = await encrypting
        if transcripts:
            await conn.executemany(INSERT_TRANSCRIPT, transcripts)
        if answers:
            await conn.executemany(INSERT_ANSWER, answers)
    if known is not None:  # committed
        known.add((workspace_id, "s", s) for s in sessions)
        known.add((workspace_id, "r", r) for r, _ in requests)
