"""The rows of ``mumu bench persist`` and its write-path figures (no NATS).

Generated final transcripts and answers, the plaintext baseline tables (``LIKE`` the
real ones: same columns, keys and indexes, ``text`` instead of ``bytea``, no RLS) and
their inserts, and the write-path comparison: ``write_records`` (encrypt + RLS) vs
plain ``executemany`` and plain ``unnest`` inserts of the same fresh rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from mumu.contracts.events import AnswerFinal, TranscriptFinal, derive_id
from mumu.crypto import Field
from mumu.db.datakeys import DataKeys
from mumu.db.records import (
    INSERT_ANSWERS,
    INSERT_TRANSCRIPTS,
    Columns,
    KnownSessions,
    Record,
    table_columns,
    write_records,
)
from mumu.stages.persist.records import to_record

FLOOR = 0.8
PLAIN_SCHEMA = """
CREATE SCHEMA bench_plain;
CREATE TABLE bench_plain.transcripts (LIKE mumu.transcripts INCLUDING ALL);
CREATE TABLE bench_plain.answers (LIKE mumu.answers INCLUDING ALL);
ALTER TABLE bench_plain.transcripts ALTER COLUMN text TYPE text USING '';
ALTER TABLE bench_plain.answers ALTER COLUMN text TYPE text USING '',
                                ALTER COLUMN question TYPE text USING '';
"""
"""Same columns, keys and indexes as the real tables; plaintext, no RLS, no encryption."""
PLAIN_TRANSCRIPT = """
INSERT INTO bench_plain.transcripts (workspace_id, key_version, event_id, request_id,
                                     session_id, text, language, duration, model, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
PLAIN_ANSWER = """
INSERT INTO bench_plain.answers (workspace_id, key_version, event_id, request_id, session_id,
                                 question, text, language, model, cancelled, prompt_tokens,
                                 completion_tokens, total_seconds, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (workspace_id, event_id) DO NOTHING
"""
"""The plain baseline: a row-wise INSERT, executemany'd (asyncpg's plain bulk insert)."""
PLAIN_UNNEST_TRANSCRIPTS = INSERT_TRANSCRIPTS.replace("mumu.", "bench_plain.").replace(
    "::bytea[]", "::text[]")
PLAIN_UNNEST_ANSWERS = INSERT_ANSWERS.replace("mumu.", "bench_plain.").replace(
    "::bytea[]", "::text[]")
"""The same ``unnest`` statements the persist stage runs, into the plaintext tables."""


FinalEvent = TranscriptFinal | AnswerFinal


def make_events(workspaces: list[str], count: int, chars: int) -> list[FinalEvent]:
    words = ["the", "quick", "brown", "fox", "asks", "about", "the", "weather", "in", "lisbon",
             "tomorrow", "morning"]
    text = " ".join(words[i % len(words)] for i in range(chars // 5))[:chars]
    out: list[FinalEvent] = []
    for i in range(count):  # like real asks: a transcript, then its answer, same request
        pair = i // 2
        ws, rid = workspaces[pair % len(workspaces)], f"r{pair}-{uuid.uuid4().hex[:12]}"
        if i % 2:
            rid = out[-1].request_id
        common = {"request_id": rid, "workspace_id": ws, "session_id": f"s{pair % 97}"}
        if i % 2 == 0:
            out.append(TranscriptFinal(
                event_id=derive_id(ws, rid, "transcribe"), text=f"{i} {text}", segments=[],
                language="en", language_probability=0.98, duration=3.2, model="base",
                compute_seconds=0.2, **common))
        else:
            out.append(AnswerFinal(
                event_id=derive_id(ws, rid, "reason"), question=f"{i} {text[: chars // 4]}",
                text=f"{i} {text}", model="smollm2", language="en", total_seconds=1.1,
                **common))
    return out


def plaintext(fields: Sequence[Field]) -> list[str]:
    return [text for *_, text in fields]


def rows_of(ws: str, columns: Columns) -> list[tuple[object, ...]]:
    return [(ws, 0, *row) for row in zip(*columns, strict=True)]


async def plain_insert(conn: asyncpg.Connection, ws: str, records: list[Record], *,
                        unnest: bool = False) -> None:
    """Plaintext rows, no RLS, no encryption: row-wise executemany, or ``unnest``."""
    transcripts, answers = table_columns(records, plaintext)
    async with conn.transaction():
        if unnest:
            if transcripts[0]:
                await conn.execute(PLAIN_UNNEST_TRANSCRIPTS, ws, 0, *transcripts)
            if answers[0]:
                await conn.execute(PLAIN_UNNEST_ANSWERS, ws, 0, *answers)
            return
        if transcripts[0]:
            await conn.executemany(PLAIN_TRANSCRIPT, rows_of(ws, transcripts))
        if answers[0]:
            await conn.executemany(PLAIN_ANSWER, rows_of(ws, answers))


def batches(events: list[FinalEvent], batch: int
            ) -> list[tuple[str, list[Record]]]:
    chunks: list[tuple[str, list[Record]]] = []
    by_ws: dict[str, list[Record]] = {}
    for e in events:
        by_ws.setdefault(e.workspace_id, []).append(to_record(e))
    for ws, records in by_ws.items():
        chunks.extend((ws, records[i : i + batch]) for i in range(0, len(records), batch))
    return chunks


def paired_ratio(rates: dict[str, list[float]], side: str, base: str) -> dict[str, Any]:
    """Median (and range) of the paired per-round ratios ``side / base``."""
    ratios = sorted(m / p for m, p in zip(rates[side], rates[base], strict=True))
    return {"median": round(statistics.median(ratios), 3),
            "min_max": [round(ratios[0], 3), round(ratios[-1], 3)]}


def medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 1) for name, values in rates.items()}


async def write_paths(pool: asyncpg.Pool, data_keys: DataKeys, workspaces: list[str],
                       args: argparse.Namespace) -> dict[str, Any]:
    """Plain executemany, plain unnest and ``write_records`` over rounds of fresh rows
    (no NATS), order rotated per round."""
    sem = asyncio.Semaphore(args.writers)
    known = KnownSessions()

    async def plain(ws: str, records: list[Record]) -> None:
        async with sem, pool.acquire() as conn:
            await plain_insert(conn, ws, records)  # type: ignore[arg-type]

    async def plain_unnest(ws: str, records: list[Record]) -> None:
        async with sem, pool.acquire() as conn:
            await plain_insert(conn, ws, records, unnest=True)  # type: ignore[arg-type]

    async def mumu(ws: str, records: list[Record]) -> None:
        async with sem:
            await write_records(pool, data_keys, ws, records, known)

    writers = [("plain", plain), ("plain_unnest", plain_unnest), ("mumu", mumu)]
    rows = min(args.events, 8192)
    rates: dict[str, list[float]] = {name: [] for name, _ in writers}
    for round_ in range(args.rounds + 2):
        for name, writer in writers[round_ % 3 :] + writers[: round_ % 3]:
            chunks = batches(make_events(workspaces, rows, args.text_chars), args.batch_rows)
            started = time.perf_counter()
            await asyncio.gather(*(writer(ws, recs) for ws, recs in chunks))
            rates[name].append(rows / (time.perf_counter() - started))
    ratio = paired_ratio(rates, "mumu", "plain")
    return {
        "rows_per_round": rows, "rounds": args.rounds + 2,
        "rows_per_s": medians(rates),
        "ratio": ratio["median"], "ratio_min_max": ratio["min_max"],
        "ratio_vs_plain_unnest": paired_ratio(rates, "mumu", "plain_unnest")["median"],
        "floor_met": ratio["median"] >= FLOOR,
    }
