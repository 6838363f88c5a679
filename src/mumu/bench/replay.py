"""Replay vs raw nats-py: a dry-run read and a --to-stage republish of 100,000 stored messages.

One embedded nats-server, the real streams, N transcripts stored on MUMU_RESULTS. Paired
rounds, order alternating, in the same run:

* read: ``mumu replay mumu.transcript.final.* --dry-run`` (counts per subject, first and
  last sequence and time, a sample) vs a raw nats-py ordered consumer on the same filter
  that only counts the messages (floors: 0.8x, and 20,000 msg/s);
* republish: ``mumu replay ... --to-stage persist`` (reads the stream and publishes each
  message to persist's replay subject, pipelined) vs raw nats-py pipelined publishing
  (``publish_async``) of the same messages, headers and subject, from memory (floor 0.8x).

Both sides run in this process with the CLI's own code path (``mumu.ops.replay.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.bench.results import write_result
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import consumers
from mumu.contracts import headers as h
from mumu.contracts.events import TranscriptFinal, derive_id, new_id
from mumu.contracts.subjects import STREAM_RESULTS, TRANSCRIPT_FINAL
from mumu.ops import replay
from mumu.ops.plan import Plan
from mumu.ops.selection import Selection
from mumu.settings import Settings

FLOOR_RATIO = 0.8
FLOOR_READ_RATE = 20_000.0
FILTER = TRANSCRIPT_FINAL.wildcard
WORKSPACES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (raw/mumu)")


def _event(i: int) -> TranscriptFinal:
    ws, rid = f"ws-{i % WORKSPACES}", new_id()
    text = f"Question {i}: what does the replay tool do with a stored transcript like this one?"
    return TranscriptFinal(
        event_id=derive_id(ws, rid, "transcribe", "final"), request_id=rid, workspace_id=ws,
        session_id="s1", text=text, segments=[], language="en", language_probability=0.99,
        duration=2.0, model="base", compute_seconds=0.2,
    )


async def _store(nc: NATS, n: int) -> None:
    js = nc.jetstream()
    for start in range(0, n, 5000):
        futures = []
        for i in range(start, min(n, start + 5000)):
            event = _event(i)
            futures.append(await js.publish_async(
                TRANSCRIPT_FINAL.for_workspace(event.workspace_id),
                event.model_dump_json().encode(),
                headers={h.MSG_ID: event.event_id, h.TRACEPARENT: f"00-{'1' * 32}-{'2' * 16}-01"}))
        await asyncio.gather(*futures)


async def raw_read(nc: NATS, n: int) -> float:
    """Seconds for a plain ordered consumer to deliver all ``n`` messages (counted only)."""
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(FILTER, stream=STREAM_RESULTS, cb=on_msg, ordered_consumer=True)
    await asyncio.wait_for(done.wait(), timeout=300)
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    return seconds


async def mumu_read(nc: NATS, n: int) -> float:
    started = time.perf_counter()
    outcome = await replay.run(nc, Plan(Selection.of(FILTER), "dry-run"),
                               candidates=[STREAM_RESULTS])
    seconds = time.perf_counter() - started
    if outcome.taken != n:
        raise RuntimeError(f"dry-run selected {outcome.taken} of {n}")
    return seconds


async def _stored(nc: NATS, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """The stored messages (subject, body, headers), for the raw publisher."""
    js = nc.jetstream()
    out: list[tuple[str, bytes, dict[str, str]]] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        out.append((msg.subject, msg.data, dict(msg.headers or {})))
        if len(out) == n:
            done.set()

    sub = await js.subscribe(FILTER, stream=STREAM_RESULTS, cb=on_msg, ordered_consumer=True)
    await asyncio.wait_for(done.wait(), timeout=300)
    await sub.unsubscribe()
    return out


async def raw_publish(nc: NATS, stored: list[tuple[str, bytes, dict[str, str]]],
                      round_no: int) -> float:
    """Seconds to publish every message to persist's replay subject, pipelined
    (``publish_async``), until JetStream acknowledged the last one; same headers."""
    js = nc.jetstream()
    target = consumers.PERSIST_RESULTS.replay
    tag = f"raw{round_no}"
    started = time.perf_counter()
    futures = []
    for seq, (subject, data, headers) in enumerate(stored, 1):
        out = {**headers, h.MSG_ID: f"{headers[h.MSG_ID]}:replay:{tag}", h.REPLAY: tag,
               h.REPLAY_SOURCE: f"{STREAM_RESULTS}:{seq}", h.REPLAY_SUBJECT: subject}
        futures.append(await js.publish_async(target.token(subject.rpartition(".")[2]), data,
                                              headers=out))
    await asyncio.gather(*futures)
    return time.perf_counter() - started


async def mumu_publish(nc: NATS, n: int) -> float:
    started = time.perf_counter()
    outcome = await replay.run(nc, Plan(Selection.of(FILTER), "to-stage", stage="persist"),
                               candidates=[STREAM_RESULTS])
    seconds = time.perf_counter() - started
    if outcome.detail.get("published") != n:
        raise RuntimeError(f"--to-stage published {outcome.detail.get('published')} of {n}")
    return seconds


def _side(rates: list[float]) -> dict[str, Any]:
    return {"msgs_per_s": round(statistics.median(rates)), "rounds": [round(r) for r in rates]}


def _compare(mumu: list[float], raw: list[float], n: int) -> dict[str, Any]:
    m_rates, r_rates = [n / s for s in mumu], [n / s for s in raw]
    ratios = [m / r for m, r in zip(m_rates, r_rates, strict=True)]
    return {"mumu": _side(m_rates), "raw_nats_py": _side(r_rates),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)]}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.messages
    times: dict[str, list[float]] = {"raw_read": [], "mumu_read": [], "raw_pub": [],
                                     "mumu_pub": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            nc = await nats.connect(server.url)
            try:
                await apply_all(nc)
                await _store(nc, n)
                stored = await _stored(nc, n)
                for r in range(args.rounds):
                    reads = [("raw_read", raw_read(nc, n)), ("mumu_read", mumu_read(nc, n))]
                    for name, work in reads if r % 2 == 0 else reversed(reads):
                        times[name].append(await work)
                    pubs = [("raw_pub", raw_publish(nc, stored, r)),
                            ("mumu_pub", mumu_publish(nc, n))]
                    for name, work in pubs if r % 2 == 0 else reversed(pubs):
                        times[name].append(await work)
            finally:
                await nc.drain()
    read = _compare(times["mumu_read"], times["raw_read"], n)
    publish = _compare(times["mumu_pub"], times["raw_pub"], n)
    return {
        "messages": n, "rounds": args.rounds,
        "dry_run_read": read, "to_stage_republish": publish,
        "floor": {"ratio": FLOOR_RATIO, "read_msgs_per_s": FLOOR_READ_RATE},
        "met": {
            "read_ratio": read["ratio"] >= FLOOR_RATIO,
            "read_rate": read["mumu"]["msgs_per_s"] >= FLOOR_READ_RATE,
            "republish_ratio": publish["ratio"] >= FLOOR_RATIO,
        },
    }


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(_run(args))
    path = write_result("replay", result)
    result["written_to"] = str(path)
    return result
