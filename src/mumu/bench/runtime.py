"""Stage runtime vs a raw nats-py chain (and FastStream): 3 pass-through hops, same run.

Throughput: N events stored on hop0, then pushed through hop0 → hop1 → hop2 → hop3,
measured from the server's own timestamps (first hop1 message stored to last hop3
message stored).
Latency: a second load paced at half the measured peak rate of that chain; per-hop
latency is the time between a message being stored on hop k and its successor
being stored on hop k+1 (server timestamps, so the measuring client adds nothing).
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

from mumu.bench.relay import BenchEvent
from mumu.bench.results import write_result
from mumu.bench.runtime_chains import (
    HOPS,
    WS,
    faststream_chain,
    raw_chain,
    require_faststream,
    runtime_chain,
)
from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH, apply_bench_stream
from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.settings import Settings

FLOOR_THROUGHPUT_RATIO = 0.7
FLOOR_P99_MS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="paired raw/mumu rounds")


async def _publish(nc: NATS, count: int, rate: float | None, tag: str) -> None:
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


async def _wait_done(nc: NATS, count: int, timeout: float = 600.0) -> None:
    js = nc.jetstream()
    sink = BENCH_HOPS[HOPS].for_workspace(WS)
    async with asyncio.timeout(timeout):
        while True:
            info = await js.stream_info(STREAM_BENCH, subjects_filter=sink)
            if sum((info.state.subjects or {}).values()) >= count:
                return
            await asyncio.sleep(0.05)


async def _timestamps(nc: NATS) -> dict[tuple[str, int], float]:
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


async def _reset(nc: NATS) -> None:
    js = nc.jetstream()
    await js.purge_stream(STREAM_BENCH)
    for consumer in await js.consumers_info(STREAM_BENCH):
        await js.delete_consumer(STREAM_BENCH, consumer.name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _throughput(
    nc: NATS, chain: Any, settings: Settings, url: str, args: argparse.Namespace, *,
    tag: str,
) -> tuple[float, int]:
    """Events/s of ``chain`` over a load stored before it starts (first hop1 → last hop3),
    and how many distinct events reached the sink.

    Storing the load first keeps the publisher from competing with the chain for the CPU.
    """
    await _reset(nc)
    await _publish(nc, args.events, None, tag)
    async with chain(settings, url, args.concurrency):
        await _wait_done(nc, args.events)
    stamps = await _timestamps(nc)
    first = min(t for (_, hop), t in stamps.items() if hop == 1)
    last = max(t for (_, hop), t in stamps.items() if hop == HOPS)
    moved = sum(1 for (_, hop) in stamps if hop == HOPS)
    return float(args.events / (last - first)), moved


async def _latency(
    nc: NATS, chain: Any, settings: Settings, url: str, args: argparse.Namespace, *,
    tag: str, rate: float,
) -> dict[str, float]:
    """Per-hop latency (server store times) with the load paced at ``rate`` events/s."""
    await _reset(nc)
    async with chain(settings, url, args.concurrency):
        await _publish(nc, args.latency_events, rate, tag)
        await _wait_done(nc, args.latency_events)
    stamps = await _timestamps(nc)
    per_hop = [
        (stamps[(rid, hop + 1)] - t) * 1000
        for (rid, hop), t in stamps.items()
        if hop < HOPS and (rid, hop + 1) in stamps
    ]
    return {
        "p50": round(statistics.median(per_hop), 3),
        "p99": round(_percentile(per_hop, 0.99), 3),
        "max": round(max(per_hop), 3),
    }


async def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Paired rounds (raw, then mumu, order alternating); the median ratio is reported."""
    require_faststream()
    chains = {"raw_nats_py": raw_chain, "mumu_runtime": runtime_chain}
    rates: dict[str, list[float]] = {name: [] for name in chains}
    moved: dict[str, list[int]] = {name: [] for name in chains}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            nc = await nats.connect(server.url)
            await apply_bench_stream(nc)
            for n in range(args.rounds):
                order = list(chains) if n % 2 == 0 else list(reversed(chains))
                for name in order:
                    rate, count = await _throughput(
                        nc, chains[name], settings, server.url, args, tag=f"{name}-{n}")
                    rates[name].append(rate)
                    moved[name].append(count)
                ratios.append(rates["mumu_runtime"][-1] / rates["raw_nats_py"][-1])
            fast, _ = await _throughput(
                nc, faststream_chain, settings, server.url, args, tag="faststream")
            result: dict[str, Any] = {}
            for name, chain in chains.items():
                peak = statistics.median(rates[name])
                result[name] = {
                    "throughput_events_per_s": round(peak, 1),
                    "rounds_events_per_s": [round(r, 1) for r in rates[name]],
                    "rounds_events_moved": moved[name],
                    "latency_rate_events_per_s": round(peak / 2, 1),
                    "per_hop_ms": await _latency(
                        nc, chain, settings, server.url, args, tag=f"{name}-lat", rate=peak / 2
                    ),
                }
            await nc.drain()
    ratio = statistics.median(ratios)
    mumu = result["mumu_runtime"]
    return {
        "events": args.events,
        "hops": HOPS,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        **result,
        "faststream": {"throughput_events_per_s": round(fast, 1)},
        "throughput_ratio": round(ratio, 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "faststream_throughput_ratio": round(
            fast / result["raw_nats_py"]["throughput_events_per_s"], 3
        ),
        "floor": {"throughput_ratio": FLOOR_THROUGHPUT_RATIO, "p99_per_hop_ms": FLOOR_P99_MS},
        "meets_floor": ratio >= FLOOR_THROUGHPUT_RATIO
        and mumu["per_hop_ms"]["p99"] <= FLOOR_P99_MS,
    }


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(_run(args, settings))
    result["file"] = str(write_result("runtime", result))
    return result
