"""Writing transcripts and answers: encrypted, workspace-scoped, one transaction per batch.

Rows are upserted on ``(workspace_id, event_id)`` (``ON CONFLICT DO NOTHING``): a
redelivered or replayed event never makes a second row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
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
INSERT_SESSIONS = """
INSERT INTO mumu.sessions (workspace_id, id)
SELECT $1, s FROM unnest($2::text[]) AS s
ON CONFLICT DO NOTHING
"""
INSERT_REQUESTS = """
INSERT INTO mumu.requests (workspace_id, id, session_id)
SELECT $1, r, s FROM unnest($2::text[], $3::text[]) AS u(r, s)
ON CONFLICT DO NOTHING
"""

Row = tuple[object, ...]


def encrypt_rows(key: DataKey, records: Sequence[Record]) -> tuple[list[Row], list[Row]]:
    """(transcript rows, answer rows) with text columns sealed under ``key``."""
    ws, version = key.workspace_id, key.version
    transcripts: list[Row] = []
    answers: list[Row] = []
    for r in records:
        row_id = str(r.event_id)
        if isinstance(r, TranscriptRecord):
            text = seal(key, r.text, table="transcripts", column="text", row_id=row_id)
            transcripts.append((ws, r.event_id, r.request_id, r.session_id, version, text,
                                r.language, r.duration, r.model, r.occurred_at))
        else:
            question = seal(key, r.question, table="answers", column="question", row_id=row_id)
            text = seal(key, r.text, table="answers", column="text", row_id=row_id)
            answers.append((ws, r.event_id, r.request_id, r.session_id, version, question, text,
                            r.language, r.model, r.cancelled, r.prompt_tokens,
                            r.completion_tokens, r.total_seconds, r.occurred_at))
    return transcripts, answers


async def write_records(
    db: Db, data_keys: DataKeys, workspace_id: str, records: Sequence[Record]
) -> None:
    """Encrypt and upsert ``records`` of one workspace in one transaction."""
    async with workspace_tx(db, workspace_id) as conn:
        try:
            key = await data_keys.active(conn, workspace_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise UnknownWorkspaceError(f"workspace {workspace_id} does not exist") from exc
        transcripts, answers = await asyncio.to_thread(encrypt_rows, key, records)
        sessions = sorted({r.session_id for r in records})
        requests = sorted({(r.request_id, r.session_id) for r in records})
        await conn.execute(INSERT_SESSIONS, workspace_id, sessions)
        await conn.execute(
            INSERT_REQUESTS, workspace_id, [r for r, _ in requests], [s for _, s in requests]
        )
        if transcripts:
            await conn.executemany(INSERT_TRANSCRIPT, transcripts)
        if answers:
            await conn.executemany(INSERT_ANSWER, answers)
