"""Persist stage (encrypted, RLS-scoped) vs a plain asyncpg consumer, same rows, same run.

Both read the same N final transcripts/answers from ``MUMU_RESULTS`` (each on its own
durable consumer) and write them with the same batch size and number of connections:

* **plain**: a raw nats-py pull consumer; each fetched batch is inserted with asyncpg
  ``executemany`` into same-shape plaintext tables (no RLS, no encryption, no
  confirmations), then every message is acked;
* **mumu**: the persist stage (AES-256-GCM per text column, RLS workspace transactions,
  session/request rows, a ``mumu.persisted`` confirmation per row, then the ack).

A third figure isolates the database write path (no NATS): ``write_records`` (encrypt +
RLS) vs plain ``executemany`` of the same rows in batches of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import SecretStr

from mumu.bench.results import write_result
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TranscriptFinal, derive_id
from mumu.crypto import Field, Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import apply_migrations, ensure_app_login
from mumu.db.records import (
    INSERT_ANSWERS,
    INSERT_TRANSCRIPTS,
    Columns,
    KnownSessions,
    Record,
    table_columns,
    write_records,
)
from mumu.db.urls import with_database, with_user
from mumu.db.workspaces import create_workspace
from mumu.runtime.process import run_stage
from mumu.settings import NatsSettings, Settings
from mumu.stages.persist.records import to_record
from mumu.stages.persist.stage import build_stage

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="rows written by each side")
    parser.add_argument("--workspaces", type=int, default=4)
    parser.add_argument("--text-chars", type=int, default=400, help="length of each text")
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--writers", type=int, default=4, help="connections writing at once")


def _events(workspaces: list[str], count: int, chars: int) -> list[TranscriptFinal | AnswerFinal]:
    words = ["the", "quick", "brown", "fox", "asks", "about", "the", "weather", "in", "lisbon",
             "tomorrow", "morning"]
    text = " ".join(words[i % len(words)] for i in range(chars // 5))[:chars]
    out: list[TranscriptFinal | AnswerFinal] = []
    for i in range(count):  # like real asks: a transcript, then its answer, same request
        pair = i // 2
        ws, rid = workspaces[pair % len(workspaces)], f"r{pair}-{uuid.uuid4().hex[:12]}"
        if i % 2:
            rid = out[-1].request_id
        common = {"request_id": rid, "workspace_id": ws, "session_id": f"s{pair % 97}"}
        if i % 2 == 0:
            out.append(TranscriptFinal(
                event_id=derive_id(rid, "transcribe"), text=f"{i} {text}", segments=[],
                language="en", language_probability=0.98, duration=3.2, model="base",
                compute_seconds=0.2, **common))
        else:
            out.append(AnswerFinal(
                event_id=derive_id(rid, "reason"), question=f"{i} {text[: chars // 4]}",
                text=f"{i} {text}", model="smollm2", language="en", total_seconds=1.1,
                **common))
    return out


def _subject(event: TranscriptFinal | AnswerFinal) -> str:
    pattern = (subjects.TRANSCRIPT_FINAL if isinstance(event, TranscriptFinal)
               else subjects.ANSWER_FINAL)
    return pattern.for_workspace(event.workspace_id)


async def _publish(nc: NatsClient, events: list[TranscriptFinal | AnswerFinal]) -> None:
    js = nc.jetstream()
    for start in range(0, len(events), 500):
        await asyncio.gather(*(
            js.publish(_subject(e), e.model_dump_json().encode(), headers={h.MSG_ID: e.event_id})
            for e in events[start : start + 500]
        ))


def _plaintext(fields: Sequence[Field]) -> list[str]:
    return [text for *_, text in fields]


def _rows(ws: str, columns: Columns) -> list[tuple[object, ...]]:
    return [(ws, 0, *row) for row in zip(*columns, strict=True)]


async def _plain_insert(conn: asyncpg.Connection, ws: str, records: list[Record], *,
                        unnest: bool = False) -> None:
    """Plaintext rows, no RLS, no encryption: row-wise executemany, or ``unnest``."""
    transcripts, answers = table_columns(records, _plaintext)
    async with conn.transaction():
        if unnest:
            if transcripts[0]:
                await conn.execute(PLAIN_UNNEST_TRANSCRIPTS, ws, 0, *transcripts)
            if answers[0]:
                await conn.execute(PLAIN_UNNEST_ANSWERS, ws, 0, *answers)
            return
        if transcripts[0]:
            await conn.executemany(PLAIN_TRANSCRIPT, _rows(ws, transcripts))
        if answers[0]:
            await conn.executemany(PLAIN_ANSWER, _rows(ws, answers))


async def _plain_consumer(nc: NatsClient, pool: asyncpg.Pool, count: int, batch: int,
                          writers: int, *, confirm: bool) -> float:
    """A raw nats-py consumer inserting plaintext rows; returns rows/s. ``confirm`` also
    publishes a ``mumu.persisted`` confirmation per row (awaiting its PubAck) before the ack,
    as the contract asks of the persist stage."""
    js = nc.jetstream()
    durable = "bench-plain-confirm" if confirm else "bench-plain"
    await js.add_consumer(subjects.STREAM_RESULTS, config=ConsumerConfig(
        durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL, max_ack_pending=10_000,
        filter_subjects=[subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard]))
    done = 0
    started = time.perf_counter()

    async def loop() -> None:
        nonlocal done
        psub = await js.pull_subscribe_bind(durable=durable, stream=subjects.STREAM_RESULTS)
        try:
            await _drain_plain(psub)
        finally:
            await psub.unsubscribe()

    async def _drain_plain(psub: Any) -> None:
        nonlocal done
        while done < count:
            try:
                msgs = await psub.fetch(batch=batch, timeout=0.5)
            except TimeoutError:
                continue
            by_ws: dict[str, list[Record]] = {}
            for msg in msgs:
                model = (TranscriptFinal if subjects.TRANSCRIPT_FINAL.matches(msg.subject)
                         else AnswerFinal)
                by_ws.setdefault(subjects.last_token(msg.subject), []).append(
                    to_record(model.model_validate(json.loads(msg.data))))
            async with pool.acquire() as conn:
                for ws, records in by_ws.items():
                    await _plain_insert(conn, ws, records)  # type: ignore[arg-type]
            if confirm:
                await asyncio.gather(*(
                    js.publish(subjects.PERSISTED.for_workspace(ws),
                               json.dumps({"source_event_id": str(r.event_id)}).encode(),
                               headers={h.MSG_ID: f"plain:{r.event_id}"})
                    for ws, records in by_ws.items() for r in records))
            await asyncio.gather(*(m.ack() for m in msgs))
            done += len(msgs)

    await asyncio.gather(*(loop() for _ in range(writers)))
    return count / (time.perf_counter() - started)


async def _mumu_stage(settings: Settings, nc: NatsClient, count: int) -> float:
    """The persist stage over the same messages; rows/s from consuming to all acked."""
    stop, ready = asyncio.Event(), asyncio.Event()
    js = nc.jetstream()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run_stage(build_stage(settings), settings, stop, started=ready))
        await ready.wait()
        started = time.perf_counter()
        while True:
            info = await js.consumer_info(subjects.STREAM_RESULTS, "persist-mumu-results")
            if info.delivered.consumer_seq >= count and not info.num_ack_pending:
                break
            if task.done():
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        stop.set()
    return count / elapsed


def _chunks(events: list[TranscriptFinal | AnswerFinal], batch: int
            ) -> list[tuple[str, list[Record]]]:
    chunks: list[tuple[str, list[Record]]] = []
    by_ws: dict[str, list[Record]] = {}
    for e in events:
        by_ws.setdefault(e.workspace_id, []).append(to_record(e))
    for ws, records in by_ws.items():
        chunks.extend((ws, records[i : i + batch]) for i in range(0, len(records), batch))
    return chunks


async def _write_paths(pool: asyncpg.Pool, data_keys: DataKeys, workspaces: list[str],
                       args: argparse.Namespace, rounds: int = 7) -> dict[str, Any]:
    """Plain executemany vs ``write_records`` over alternating rounds of fresh rows (no
    NATS); the ratio is the median of the rounds' paired ratios (the machine is shared)."""
    sem = asyncio.Semaphore(args.writers)
    known = KnownSessions()

    async def plain(ws: str, records: list[Record]) -> None:
        async with sem, pool.acquire() as conn:
            await _plain_insert(conn, ws, records)  # type: ignore[arg-type]

    async def mumu(ws: str, records: list[Record]) -> None:
        async with sem:
            await write_records(pool, data_keys, ws, records, known)

    rows = min(args.events, 8192)
    rates: dict[str, list[float]] = {"plain": [], "mumu": []}
    for _ in range(rounds):
        for name, writer in (("plain", plain), ("mumu", mumu)):
            chunks = _chunks(_events(workspaces, rows, args.text_chars), args.batch_rows)
            started = time.perf_counter()
            await asyncio.gather(*(writer(ws, recs) for ws, recs in chunks))
            rates[name].append(rows / (time.perf_counter() - started))
    ratios = sorted(m / p for m, p in zip(rates["mumu"], rates["plain"], strict=True))
    ratio = statistics.median(ratios)
    return {
        "rows_per_round": rows, "rounds": rounds,
        "plain_executemany_rows_per_s": round(statistics.median(rates["plain"]), 1),
        "encrypted_rls_rows_per_s": round(statistics.median(rates["mumu"]), 1),
        "ratio": round(ratio, 3),
        "ratio_min_max": [round(ratios[0], 3), round(ratios[-1], 3)],
        "floor_met": ratio >= FLOOR,
    }


@contextlib.asynccontextmanager
async def _database(settings: Settings, scratch: Path) -> AsyncIterator[str]:
    """A superuser/owner URL of a fresh database (embedded unless an admin URL is set)."""
    server: EmbeddedPostgres | None = None
    if settings.database_admin_url is not None:
        base = settings.database_admin_url.get_secret_value()
    else:
        server = EmbeddedPostgres(scratch / "pg")
        await server.start()
        base = server.url()
    name = f"mumu_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    try:
        yield with_database(base, name)
    finally:
        conn = await asyncpg.connect(base)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
        if server is not None:
            await server.stop()


async def _truncate_plain(admin_url: str, *, also_mumu: bool = False) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("TRUNCATE bench_plain.transcripts, bench_plain.answers")
        if also_mumu:  # both sides start empty, so index sizes match
            await conn.execute("TRUNCATE mumu.transcripts, mumu.answers, mumu.requests, "
                               "mumu.sessions")
    finally:
        await conn.close()


async def _setup(admin_url: str, args: argparse.Namespace
                 ) -> tuple[str, str, DataKeys, list[str]]:
    """Migrate, add the app role and the plain tables: (app url, keyring, keys, workspaces)."""
    app_url = with_user(admin_url, "mumu_bench_app", secrets.token_urlsafe(12))
    master = MasterKey.generate("bench").encoded()
    data_keys = DataKeys(Keyring.parse(master))
    admin = await asyncpg.connect(admin_url)
    try:
        await apply_migrations(admin)
        await ensure_app_login(admin, app_url)
        await admin.execute(PLAIN_SCHEMA)
        await admin.execute(
            "GRANT USAGE ON SCHEMA bench_plain TO mumu_bench_app; GRANT SELECT, INSERT "
            "ON ALL TABLES IN SCHEMA bench_plain TO mumu_bench_app")
        workspaces = [(await create_workspace(admin, data_keys, f"bench{i}")).workspace_id
                      for i in range(args.workspaces)]
    finally:
        await admin.close()
    return app_url, master, data_keys, workspaces


def _stage_settings(settings: Settings, args: argparse.Namespace, nats_url: str,
                    app_url: str, master: str) -> Settings:
    return settings.model_copy(update={
        "nats": NatsSettings(url=nats_url),
        "database_url": SecretStr(app_url), "master_keys": SecretStr(master),
        "log_level": "WARNING",
        "persist": settings.persist.model_copy(update={
            "batch_rows": args.batch_rows, "writers": args.writers, "pool_max": args.writers}),
        "stage": settings.stage.model_copy(update={"fetch_timeout": 0.5}),
    })


async def _timed(work: Awaitable[float]) -> tuple[float, float]:
    """(rows/s, process CPU seconds) of one phase."""
    cpu = time.process_time()
    rate = await work
    return rate, time.process_time() - cpu


async def _measure(args: argparse.Namespace, settings: Settings, nats_url: str,
                   admin_url: str) -> dict[str, Any]:
    app_url, master, data_keys, workspaces = await _setup(admin_url, args)
    nc = NatsClient()
    await nc.connect(nats_url)
    pool = await asyncpg.create_pool(app_url, min_size=args.writers, max_size=args.writers)
    try:
        # first, while the process heap is small (as in a real persist process)
        write_path = await _write_paths(pool, data_keys, workspaces, args)
        await _truncate_plain(admin_url, also_mumu=True)
        events = _events(workspaces, args.events, args.text_chars)
        n = len(events)
        await apply_all(nc)
        await _publish(nc, events)
        del events  # the consumers below run with a heap like a real process's
        gc.collect()
        plain = await _timed(_plain_consumer(nc, pool, n, args.batch_rows, args.writers,
                                             confirm=False))
        await _truncate_plain(admin_url)
        confirmed = await _timed(_plain_consumer(nc, pool, n, args.batch_rows, args.writers,
                                                 confirm=True))
        stage = await _timed(_mumu_stage(
            _stage_settings(settings, args, nats_url, app_url, master), nc, n))
        check = await asyncpg.connect(admin_url)
        stored = (await check.fetchval("SELECT count(*) FROM mumu.transcripts")
                  + await check.fetchval("SELECT count(*) FROM mumu.answers"))
        await check.close()
    finally:
        await pool.close()
        await nc.drain()
    ratio = stage[0] / plain[0]
    return {
        "events": args.events, "workspaces": args.workspaces, "text_chars": args.text_chars,
        "batch_rows": args.batch_rows, "writers": args.writers,
        "rows_stored_by_stage": stored,
        "plain_consumer_rows_per_s": round(plain[0], 1),
        "persist_stage_rows_per_s": round(stage[0], 1),
        "ratio": round(ratio, 3),
        "floor": FLOOR,
        "floor_met": ratio >= FLOOR,
        "plain_consumer_with_confirmations_rows_per_s": round(confirmed[0], 1),
        "ratio_vs_plain_with_confirmations": round(stage[0] / confirmed[0], 3),
        "python_cpu_us_per_row": {
            "plain_consumer": round(plain[1] / n * 1e6, 1),
            "plain_consumer_with_confirmations": round(confirmed[1] / n * 1e6, 1),
            "persist_stage": round(stage[1] / n * 1e6, 1),
        },
        "write_path": write_path,
    }


async def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="mumu-bench-persist-"))
    nats_server = EmbeddedNats(scratch / "nats")
    await nats_server.start()
    try:
        async with _database(settings, scratch) as admin_url:
            return await _measure(args, settings, nats_server.url, admin_url)
    finally:
        await nats_server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(_run(args, settings))
    write_result("persist", result)
    return result
