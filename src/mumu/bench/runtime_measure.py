"""Measuring a relay chain of `mumu bench runtime` (plain and ``--secure``) on one server.

Throughput: N events stored on hop0, then pushed through hop0 → hop1 → hop2 → hop3,
from the server's own timestamps (first hop1 message stored to last hop3 message stored).
Latency: a load paced at a given rate; per-hop latency is the time between a message being
stored on hop k and its successor being stored on hop k+1 (server timestamps, so the
measuring client adds nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from mumu.bench.relay import BenchEvent
from mumu.bench.runtime_chains import HOPS, WS
from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts import headers as h
from mumu.settings import Settings


async def publish(nc: NATS, count: int, rate: float | None, tag: str) -> None:
    """Publish ``count`` events on hop0, paced at ``rate`` events/s (None: at once)."""
    js = nc.jetstream()
    src = BENCH_HOPS[0].for_workspace(WS)
    started = time.perf_counter()
    pending: list[Any] = []
    for i in range(count):
        rid = f"{tag}-{i}"
        body = BenchEvent(
            event_id=rid,
            request_id=rid,
            workspace_id=WS,
            session_id="bench",
            seq=i,
            padding="x" * 128,
        )
        pending.append(js.publish(src, body.model_dump_json().encode(), headers={h.MSG_ID: rid}))
        if rate is not None:
            await asyncio.gather(*pending)
            pending.clear()
            delay = started + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        elif len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def wait_done(nc: NATS, count: int, timeout: float = 600.0) -> None:
    js = nc.jetstream()
    sink = BENCH_HOPS[HOPS].for_workspace(WS)
    async with asyncio.timeout(timeout):
        while True:
            info = await js.stream_info(STREAM_BENCH, subjects_filter=sink)
            if sum((info.state.subjects or {}).values()) >= count:
                return
            await asyncio.sleep(0.05)


async def timestamps(nc: NATS) -> dict[tuple[str, int], float]:
    """(request id, hop) → server store time (s) of every message in the bench stream."""
    js = nc.jetstream()
    stamps: dict[tuple[str, int], float] = {}
    for pattern in BENCH_HOPS:
        info = await js.stream_info(STREAM_BENCH, subjects_filter=pattern.wildcard)
        total = sum((info.state.subjects or {}).values())
        if not total:
            continue
        sub = await js.subscribe(pattern.wildcard, ordered_consumer=True)
        for _ in range(total):
            msg = await sub.next_msg(timeout=10)
            event = BenchEvent.model_validate_json(msg.data)
            stamps[(event.request_id, event.hop)] = msg.metadata.timestamp.timestamp()
        await sub.unsubscribe()
    return stamps


async def reset(nc: NATS) -> None:
    js = nc.jetstream()
    await js.purge_stream(STREAM_BENCH)
    for consumer in await js.consumers_info(STREAM_BENCH):
        await js.delete_consumer(STREAM_BENCH, consumer.name)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class CpuMeter:
    """CPU seconds (user + system) this process and a nats-server spend over a window.

    On a shared machine the wall-clock rate of a chain moves with whatever else runs;
    the CPU it burns per event hardly does, so it tells the cost of a change apart from
    the noise.
    """

    def __init__(self, server_pid: int) -> None:
        self._stat = Path(f"/proc/{server_pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK")
        self.windows: list[tuple[float, float]] = []
        """(this process, the server) CPU seconds of each window."""

    def now(self) -> tuple[float, float]:
        times = os.times()
        # fields 14 and 15 (utime, stime), counted after the ")" that ends the name
        fields = self._stat.read_text().rpartition(")")[2].split()
        server = (int(fields[11]) + int(fields[12])) / self._tick
        return times.user + times.system, server

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        own, server = self.now()
        yield
        own_end, server_end = self.now()
        self.windows.append((own_end - own, server_end - server))


async def throughput(
    nc: NATS, chain: Any, settings: Settings, url: str, args: argparse.Namespace, *,
    tag: str, cpu: CpuMeter | None = None,
) -> tuple[float, int]:
    """Events/s of ``chain`` over a load stored before it starts (first hop1 → last hop3),
    and how many distinct events reached the sink. ``cpu``: records what the chain (this
    process) and the server spend while the chain runs.

    Storing the load first keeps the publisher from competing with the chain for the CPU.
    """
    await reset(nc)
    await publish(nc, args.events, None, tag)
    with cpu.window() if cpu is not None else contextlib.nullcontext():
        async with chain(settings, url, args.concurrency):
            await wait_done(nc, args.events)
    stamps = await timestamps(nc)
    first = min(t for (_, hop), t in stamps.items() if hop == 1)
    last = max(t for (_, hop), t in stamps.items() if hop == HOPS)
    moved = sum(1 for (_, hop) in stamps if hop == HOPS)
    return float(args.events / (last - first)), moved


async def latency(
    nc: NATS, chain: Any, settings: Settings, url: str, args: argparse.Namespace, *,
    tag: str, rate: float,
) -> dict[str, float]:
    """Per-hop latency (server store times) with the load paced at ``rate`` events/s."""
    await reset(nc)
    async with chain(settings, url, args.concurrency):
        await publish(nc, args.latency_events, rate, tag)
        await wait_done(nc, args.latency_events)
    stamps = await timestamps(nc)
    per_hop = [
        (stamps[(rid, hop + 1)] - t) * 1000
        for (rid, hop), t in stamps.items()
        if hop < HOPS and (rid, hop + 1) in stamps
    ]
    return {
        "p50": round(statistics.median(per_hop), 3),
        "p99": round(percentile(per_hop, 0.99), 3),
        "max": round(max(per_hop), 3),
    }
