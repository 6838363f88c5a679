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
from pathlib import Path
from typing import Any

import nats

from mumu.bench import runtime_secure
from mumu.bench.results import write_result
from mumu.bench.runtime_chains import (
    HOPS,
    faststream_chain,
    raw_chain,
    require_faststream,
    runtime_chain,
)
from mumu.bench.runtime_measure import latency, throughput
from mumu.bench.stream import apply_bench_stream
from mumu.broker.embedded import EmbeddedNats
from mumu.settings import Settings

FLOOR_THROUGHPUT_RATIO = 0.7
FLOOR_P99_MS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-events", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="paired rounds (raw/mumu; with --secure: plain/secure)")
    parser.add_argument(
        "--secure", action="store_true",
        help="instead: the mumu runtime on a server with nkey users, permissions and TLS "
        "vs the same on an anonymous plaintext server (runtime-secure.json)",
    )


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
                    rate, count = await throughput(
                        nc, chains[name], settings, server.url, args, tag=f"{name}-{n}")
                    rates[name].append(rate)
                    moved[name].append(count)
                ratios.append(rates["mumu_runtime"][-1] / rates["raw_nats_py"][-1])
            fast, _ = await throughput(
                nc, faststream_chain, settings, server.url, args, tag="faststream")
            result: dict[str, Any] = {}
            for name, chain in chains.items():
                peak = statistics.median(rates[name])
                result[name] = {
                    "throughput_events_per_s": round(peak, 1),
                    "rounds_events_per_s": [round(r, 1) for r in rates[name]],
                    "rounds_events_moved": moved[name],
                    "latency_rate_events_per_s": round(peak / 2, 1),
                    "per_hop_ms": await latency(
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
    if args.secure:
        result = asyncio.run(runtime_secure.compare(args, settings))
        result["file"] = str(write_result(runtime_secure.RESULT, result))
        return result
    result = asyncio.run(_run(args, settings))
    result["file"] = str(write_result("runtime", result))
    return result
