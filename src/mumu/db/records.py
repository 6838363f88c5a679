"""Writing transcripts and answers: encrypted, workspace-scoped, one transaction per batch.

Rows are upserted on ``(workspace_id, event_id)`` (``ON CONFLICT DO NOTHING``): a
redelivered or replayed event never makes a second row. Sessions are upserted in the
same transaction; requests are a view over the stored rows (``sql/0003``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mumu.crypto import DataKey, Field, seal_all
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

INSERT_TRANSCRIPTS = """
INSERT INTO mumu.transcripts (workspace_id, key_version, event_id, request_id, session_id,
                              text, language, duration, model, occurred_at)
SELECT $1, $2, * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bytea[], $7::text[],
                             $8::float8[], $9::text[], $10::timestamptz[])
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
INSERT_ANSWERS = """
INSERT INTO mumu.answers (workspace_id, key_version, event_id, request_id, session_id,
                          question, text, language, model, cancelled, prompt_tokens,
                          completion_tokens, total_seconds, occurred_at)
SELECT $1, $2, * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bytea[], $7::bytea[],
                             $8::text[], $9::text[], $10::bool[], $11::int[], $12::int[],
                             $13::float8[], $14::timestamptz[])
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
"""One statement per table and batch: every column goes as one array (``unnest``), which
costs both asyncpg and PostgreSQL far less than a statement execution per row."""
INSERT_SESSIONS = """
INSERT INTO mumu.sessions (workspace_id, id) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""
ENCRYPT_IN_THREAD_CHARS = 256 * 1024
"""Batches with more text than this are encrypted in a worker thread, off the loop."""

Columns = list[list[object]]


class KnownSessions:
    """Sessions already committed by this process (bounded, oldest out).

    Only filled after a commit, so a rolled-back batch never hides a missing row; a
    miss only costs an ``ON CONFLICT DO NOTHING`` upsert.
    """

    def __init__(self, size: int = 65_536) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._size = size

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


ProtectAll = Callable[[Sequence[Field]], Sequence[object]]
"""The stored values of many text fields, in order."""


def table_columns(records: Sequence[Record], protect_all: ProtectAll) -> tuple[Columns, Columns]:
    """(transcript columns, answer columns), each a list per column in the order of the
    INSERT statements' arrays; text columns go through ``protect_all`` in one call."""
    transcripts = [r for r in records if isinstance(r, TranscriptRecord)]
    answers = [r for r in records if isinstance(r, AnswerRecord)]
    fields: list[Field] = [("transcripts", "text", str(r.event_id), r.text) for r in transcripts]
    for a in answers:
        row_id = str(a.event_id)
        fields.append(("answers", "question", row_id, a.question))
        fields.append(("answers", "text", row_id, a.text))
    stored = list(protect_all(fields))
    n = len(transcripts)
    t_cols: Columns = [
        [r.event_id for r in transcripts], [r.request_id for r in transcripts],
        [r.session_id for r in transcripts], stored[:n], [r.language for r in transcripts],
        [r.duration for r in transcripts], [r.model for r in transcripts],
        [r.occurred_at for r in transcripts],
    ]
    a_cols: Columns = [
        [a.event_id for a in answers], [a.request_id for a in answers],
        [a.session_id for a in answers], stored[n::2], stored[n + 1 :: 2],
        [a.language for a in answers], [a.model for a in answers],
        [a.cancelled for a in answers], [a.prompt_tokens for a in answers],
        [a.completion_tokens for a in answers], [a.total_seconds for a in answers],
        [a.occurred_at for a in answers],
    ]
    return t_cols, a_cols


def encrypt_columns(key: DataKey, records: Sequence[Record]) -> tuple[Columns, Columns]:
    """Columns with every text field sealed under ``key`` (bound to its table/column/row)."""
    return table_columns(records, lambda fields: seal_all(key, fields))


async def write_records(
    db: Db, data_keys: DataKeys, workspace_id: str, records: Sequence[Record],
    known: KnownSessions | None = None,
) -> None:
    """Encrypt and upsert ``records`` of one workspace in one transaction."""
    sessions = sorted(s for s in {r.session_id for r in records}
                      if known is None or (workspace_id, s) not in known)
    chars = sum(len(r.text) + len(getattr(r, "question", "")) for r in records)
    async with workspace_tx(db, workspace_id) as conn:
        try:
            key = await data_keys.active(conn, workspace_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise UnknownWorkspaceError(f"workspace {workspace_id} does not exist") from exc
        if chars > ENCRYPT_IN_THREAD_CHARS:
            transcripts, answers = await asyncio.to_thread(encrypt_columns, key, records)
        else:  # a few hundred microseconds: cheaper than a thread hand-off
            transcripts, answers = encrypt_columns(key, records)
        if sessions:
            await conn.execute(INSERT_SESSIONS, workspace_id, sessions)
        if transcripts[0]:
            await conn.execute(INSERT_TRANSCRIPTS, workspace_id, key.version, *transcripts)
        if answers[0]:
            await conn.execute(INSERT_ANSWERS, workspace_id, key.version, *answers)
    if known is not None:  # committed
        known.add((workspace_id, s) for s in sessions)
