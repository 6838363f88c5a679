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
noisy). The write-path figures (``persist_rows``) leave NATS out: ``write_records`` vs the two plain
inserts over the same fresh rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import SecretStr

from mumu.bench.persist_db import bench_database, setup, stored_rows, truncate
from mumu.bench.persist_rows import (
    FLOOR,
    make_events,
    medians,
    paired_ratio,
    plain_insert,
    write_paths,
)
from mumu.bench.results import write_result
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TranscriptFinal
from mumu.db.records import Record
from mumu.runtime.process import run_stage
from mumu.settings import NatsSettings, Settings
from mumu.stages.persist.records import to_record
from mumu.stages.persist.stage import build_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000,
                        help="rows written by each side per round")
    parser.add_argument("--workspaces", type=int, default=4)
    parser.add_argument("--text-chars", type=int, default=400, help="length of each text")
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--writers", type=int, default=4, help="connections writing at once")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (median ratio)")


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
                    await plain_insert(conn, ws, records, unnest=unnest)  # type: ignore[arg-type]
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
    app_url, master, data_keys, workspaces = await setup(admin_url, args.workspaces)
    stage_settings = _stage_settings(settings, args, nats_url, app_url, master)
    nc = NatsClient()
    await nc.connect(nats_url)
    pool = await asyncpg.create_pool(app_url, min_size=args.writers, max_size=args.writers)
    rates: dict[str, list[float]] = {"plain": [], "plain_unnest": [], "mumu": []}
    cpu: dict[str, float] = dict.fromkeys(rates, 0.0)
    checked: dict[str, int] = dict.fromkeys(rates, 0)  # rows found stored after each side
    try:
        # first, while the process heap is small (as in a real persist process)
        write_path = await write_paths(pool, data_keys, workspaces, args)
        await apply_all(nc)
        js = nc.jetstream()
        total = 0
        for round_ in range(args.rounds):
            events = make_events(workspaces, args.events, args.text_chars)
            start_seq = (await js.stream_info(subjects.STREAM_RESULTS)).state.last_seq + 1
            await _publish(nc, events)
            n, total = len(events), total + len(events)
            del events  # the consumers run with a heap like a real process's
            gc.collect()
            names = list(rates)
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                await truncate(admin_url)
                if name == "mumu":
                    work = _mumu_stage(stage_settings, nc, total, n)
                else:
                    work = _plain_consumer(nc, pool, _Slice(f"bench-{name}-{round_}", start_seq,
                                                            n), args, unnest=name != "plain")
                rate, seconds = await _timed(work)
                rates[name].append(rate)
                cpu[name] += seconds
                checked[name] += await stored_rows(admin_url, "mumu" if name == "mumu"
                                                   else "bench_plain", expected=n)
    finally:
        await pool.close()
        await nc.drain()
    ratio = paired_ratio(rates, "mumu", "plain")
    rows = args.events * args.rounds
    return {
        "events_per_round": args.events, "rounds": args.rounds,
        "workspaces": args.workspaces, "text_chars": args.text_chars,
        "batch_rows": args.batch_rows, "writers": args.writers,
        "rows_checked": checked,
        "rows_per_s": medians(rates),
        "plain_consumer_rows_per_s": round(statistics.median(rates["plain"]), 1),
        "persist_stage_rows_per_s": round(statistics.median(rates["mumu"]), 1),
        "ratio": ratio["median"],
        "ratio_min_max": ratio["min_max"],
        "ratio_vs_plain_unnest": paired_ratio(rates, "mumu", "plain_unnest")["median"],
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
        async with bench_database(settings, scratch) as admin_url:
            return await _measure(args, settings, nats_server.url, admin_url)
    finally:
        await nats_server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(_run(args, settings))
    write_result("persist", result)
    return result
