"""Persist stage (encrypted, RLS-scoped) vs plain asyncpg consumers, same rows, same run.

Paired rounds: each round publishes N fresh final transcripts/answers to
``MUMU_RESULTS`` and three consumers read them (each on its own durable consumer,
tables emptied before each, order rotated per round), with the same batch size and
number of connections:

* **plain** (the baseline): a raw nats-py pull consumer; each fetched batch is
  inserted with asyncpg ``executemany`` of a row-wise INSERT into same-shape
  plaintext tables (no RLS, no encryption, no confirmations), then acked;
* **plain, unnest**: the same consumer inserting with the ``unnest`` statements the
  persist stage uses (isolates what encryption and RLS cost);
* **mumu**: the persist stage (AES-256-GCM per text column, RLS workspace transactions,
  session rows, a ``mumu.persisted`` confirmation per row, then the ack).

The ratio is the median of the rounds' paired ratios (the machine is shared and
noisy). The write-path figures leave NATS out: ``write_records`` vs the two plain
inserts over the same fresh rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
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
    parser.add_argument("--events", type=int, default=10_000,
                        help="rows written by each side per round")
    parser.add_argument("--workspaces", type=int, default=4)
    parser.add_argument("--text-chars", type=int, default=400, help="length of each text")
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--writers", type=int, default=4, help="connections writing at once")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (median ratio)")


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


@dataclass(frozen=True)
class _Slice:
    """The messages of one round: a durable consumer from ``start_seq``, ``count`` long."""

    durable: str
    start_seq: int
    count: int


async def _plain_consumer(nc: NatsClient, pool: asyncpg.Pool, part: _Slice,
                          args: argparse.Namespace, *, unnest: bool) -> float:
    """A raw nats-py consumer inserting plaintext rows of ``part``; returns rows/s."""
    durable, start_seq, count = part.durable, part.start_seq, part.count
    js = nc.jetstream()
    await js.add_consumer(subjects.STREAM_RESULTS, config=ConsumerConfig(
        durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq,
        max_ack_pending=10_000,
        filter_subjects=[subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard]))
    done = 0
    started = time.perf_counter()

    async def loop() -> None:
        psub = await js.pull_subscribe_bind(durable=durable, stream=subjects.STREAM_RESULTS)
        try:
            await drain(psub)
        finally:
            await psub.unsubscribe()

    async def drain(psub: Any) -> None:
        nonlocal done
        while done < count:
            try:
                msgs = await psub.fetch(batch=args.batch_rows, timeout=0.5)
            except TimeoutError:
                continue
            by_ws: dict[str, list[Record]] = {}
            for msg in msgs:
                model = (TranscriptFinal if subjects.TRANSCRIPT_FINAL.matches(msg.subject)
                         else AnswerFinal)
                by_ws.setdefault(subjects.last_token(msg.subject), []).append(
                    to_record(model.model_validate_json(msg.data)))
            async with pool.acquire() as conn:
                for ws, records in by_ws.items():
                    await _plain_insert(conn, ws, records, unnest=unnest)  # type: ignore[arg-type]
            await asyncio.gather(*(m.ack() for m in msgs))
            done += len(msgs)

    await asyncio.gather(*(loop() for _ in range(args.writers)))
    return count / (time.perf_counter() - started)


async def _mumu_stage(settings: Settings, nc: NatsClient, total: int, count: int) -> float:
    """rows/s of the persist stage over this round's ``count`` messages: from ready until
    its durable consumer (which carries on from earlier rounds) has acked ``total``."""
    stop, ready = asyncio.Event(), asyncio.Event()
    js = nc.jetstream()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run_stage(build_stage(settings), settings, stop, started=ready))
        await ready.wait()
        started = time.perf_counter()
        while not task.done():
            info = await js.consumer_info(subjects.STREAM_RESULTS, "persist-mumu-results")
            if info.delivered.consumer_seq >= total and not info.num_ack_pending:
                break
            await asyncio.sleep(0.01)
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


def _ratio(rates: dict[str, list[float]], side: str, base: str) -> dict[str, Any]:
    """Median (and range) of the paired per-round ratios ``side / base``."""
    ratios = sorted(m / p for m, p in zip(rates[side], rates[base], strict=True))
    return {"median": round(statistics.median(ratios), 3),
            "min_max": [round(ratios[0], 3), round(ratios[-1], 3)]}


def _medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 1) for name, values in rates.items()}


async def _write_paths(pool: asyncpg.Pool, data_keys: DataKeys, workspaces: list[str],
                       args: argparse.Namespace) -> dict[str, Any]:
    """Plain executemany, plain unnest and ``write_records`` over rounds of fresh rows
    (no NATS), order rotated per round."""
    sem = asyncio.Semaphore(args.writers)
    known = KnownSessions()

    async def plain(ws: str, records: list[Record]) -> None:
        async with sem, pool.acquire() as conn:
            await _plain_insert(conn, ws, records)  # type: ignore[arg-type]

    async def plain_unnest(ws: str, records: list[Record]) -> None:
        async with sem, pool.acquire() as conn:
            await _plain_insert(conn, ws, records, unnest=True)  # type: ignore[arg-type]

    async def mumu(ws: str, records: list[Record]) -> None:
        async with sem:
            await write_records(pool, data_keys, ws, records, known)

    writers = [("plain", plain), ("plain_unnest", plain_unnest), ("mumu", mumu)]
    rows = min(args.events, 8192)
    rates: dict[str, list[float]] = {name: [] for name, _ in writers}
    for round_ in range(args.rounds + 2):
        for name, writer in writers[round_ % 3 :] + writers[: round_ % 3]:
            chunks = _chunks(_events(workspaces, rows, args.text_chars), args.batch_rows)
            started = time.perf_counter()
            await asyncio.gather(*(writer(ws, recs) for ws, recs in chunks))
            rates[name].append(rows / (time.perf_counter() - started))
    ratio = _ratio(rates, "mumu", "plain")
    return {
        "rows_per_round": rows, "rounds": args.rounds + 2,
        "rows_per_s": _medians(rates),
        "ratio": ratio["median"], "ratio_min_max": ratio["min_max"],
        "ratio_vs_plain_unnest": _ratio(rates, "mumu", "plain_unnest")["median"],
        "floor_met": ratio["median"] >= FLOOR,
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


async def _check_stored(admin_url: str, expected: int) -> None:
    """A rate only counts if every row is there."""
    conn = await asyncpg.connect(admin_url)
    try:
        stored = (await conn.fetchval("SELECT count(*) FROM mumu.transcripts")
                  + await conn.fetchval("SELECT count(*) FROM mumu.answers"))
    finally:
        await conn.close()
    if stored != expected:
        raise RuntimeError(f"the persist stage stored {stored} rows of {expected}")


async def _truncate(admin_url: str) -> None:
    """Every side starts from empty tables, so index sizes match."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("TRUNCATE bench_plain.transcripts, bench_plain.answers, "
                           "mumu.transcripts, mumu.answers, mumu.sessions")
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
    stage_settings = _stage_settings(settings, args, nats_url, app_url, master)
    nc = NatsClient()
    await nc.connect(nats_url)
    pool = await asyncpg.create_pool(app_url, min_size=args.writers, max_size=args.writers)
    rates: dict[str, list[float]] = {"plain": [], "plain_unnest": [], "mumu": []}
    cpu: dict[str, float] = dict.fromkeys(rates, 0.0)
    try:
        # first, while the process heap is small (as in a real persist process)
        write_path = await _write_paths(pool, data_keys, workspaces, args)
        await apply_all(nc)
        js = nc.jetstream()
        total = 0
        for round_ in range(args.rounds):
            events = _events(workspaces, args.events, args.text_chars)
            start_seq = (await js.stream_info(subjects.STREAM_RESULTS)).state.last_seq + 1
            await _publish(nc, events)
            n, total = len(events), total + len(events)
            del events  # the consumers run with a heap like a real process's
            gc.collect()
            names = list(rates)
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                await _truncate(admin_url)
                if name == "mumu":
                    work = _mumu_stage(stage_settings, nc, total, n)
                else:
                    work = _plain_consumer(nc, pool, _Slice(f"bench-{name}-{round_}", start_seq,
                                                            n), args, unnest=name != "plain")
                rate, seconds = await _timed(work)
                rates[name].append(rate)
                cpu[name] += seconds
                if name == "mumu":
                    await _check_stored(admin_url, n)
    finally:
        await pool.close()
        await nc.drain()
    ratio = _ratio(rates, "mumu", "plain")
    rows = args.events * args.rounds
    return {
        "events_per_round": args.events, "rounds": args.rounds,
        "workspaces": args.workspaces, "text_chars": args.text_chars,
        "batch_rows": args.batch_rows, "writers": args.writers,
        "stage_rows_checked": "every round: rows in the tables == events published",
        "rows_per_s": _medians(rates),
        "plain_consumer_rows_per_s": round(statistics.median(rates["plain"]), 1),
        "persist_stage_rows_per_s": round(statistics.median(rates["mumu"]), 1),
        "ratio": ratio["median"],
        "ratio_min_max": ratio["min_max"],
        "ratio_vs_plain_unnest": _ratio(rates, "mumu", "plain_unnest")["median"],
        "floor": FLOOR,
        "floor_met": ratio["median"] >= FLOOR,
        "python_cpu_us_per_row": {name: round(seconds / rows * 1e6, 1)
                                  for name, seconds in cpu.items()},
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
