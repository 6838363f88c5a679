"""`mumu bench runtime --secure`: what nkey users, permissions and TLS cost the runtime.

The mumu runtime chain (3 pass-through hops) runs in paired rounds on two servers started
side by side: one anonymous and plaintext, one with the production users and mutual TLS
(``mumu.bench.secure_broker``). Each round measures both (order alternating) with the same
events, the same concurrency and, for latency, the same paced rate (half the plain
server's peak of that round); the result is the median of the per-round ratios
secure/plain of throughput and of the p99 per-hop latency.

Before measuring, the secure server is checked to refuse what it must (a client without
credentials, a plaintext client, a client without a certificate); the result records it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import statistics
import tempfile
from pathlib import Path
from typing import Any, Final

import nats.errors

from mumu.bench.runtime_chains import HOPS, runtime_chain
from mumu.bench.runtime_measure import CpuMeter, latency, throughput
from mumu.bench.secure_broker import Broker, plain_broker, secure_broker
from mumu.bench.stream import apply_bench_stream
from mumu.broker.connect import NatsUnreachable, connect
from mumu.broker.tls import client_context
from mumu.settings import Settings

RESULT: Final = "runtime-secure"
FLOOR_THROUGHPUT_RATIO: Final = 0.9
FLOOR_P99_MS: Final = 20.0
MODES: Final = ("plain", "secure")


async def _refused(url: str, **options: Any) -> bool:
    """Whether the server refuses a raw nats-py client connecting with ``options``."""
    async def expected(_: Exception) -> None:
        """The refusal is the point: nats-py would log it as an error."""

    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0,
                                allow_reconnect=False, error_cb=expected, **options)
    except (nats.errors.Error, OSError, ssl.SSLError, TimeoutError):
        return True
    await nc.close()
    return False


async def _plaintext_refused(broker: Broker) -> bool:
    """A client that speaks plain NATS: CONNECT and PING, no TLS handshake. The server
    must never answer PONG."""
    port = broker.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = await reader.readline()
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(3):
                while line := await reader.readline():
                    if line.startswith(b"PONG"):
                        return False
        return b'"tls_required":true' in info
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def security_checks(broker: Broker) -> dict[str, bool]:
    """What the secure server refuses (every value must be True), and that the
    benchmark's own credentials get in."""
    tls = broker.nats.tls
    with_cert = client_context(tls.ca_file, tls.cert_file, tls.key_file)
    without_cert = client_context(tls.ca_file)
    checks = {
        "anonymous_refused": await _refused(broker.server.url, tls=with_cert),
        "without_client_certificate_refused": await _refused(broker.server.url,
                                                              tls=without_cert),
        "plaintext_refused": await _plaintext_refused(broker),
    }
    try:
        nc = await connect(broker.nats, "mumu-bench-check", role="operator")
    except NatsUnreachable:
        checks["credentials_accepted"] = False
    else:
        checks["credentials_accepted"] = True
        await nc.close()
    return checks


def _summary(
    rates: list[float], moved: list[int], lat: list[dict[str, float]],
    cpu: list[tuple[float, float]],
) -> dict[str, Any]:
    return {
        "throughput_events_per_s": round(statistics.median(rates), 1),
        "cpu_us_per_event": {
            "runtime": round(statistics.median(own for own, _ in cpu), 1),
            "nats_server": round(statistics.median(server for _, server in cpu), 1),
            "total": round(statistics.median(sum(c) for c in cpu), 1),
        },
        "rounds_cpu_us_per_event": [[round(own, 1), round(server, 1)] for own, server in cpu],
        "rounds_events_per_s": [round(r, 1) for r in rates],
        "rounds_events_moved": moved,
        "per_hop_ms": {
            "p50": round(statistics.median(x["p50"] for x in lat), 3),
            "p99": round(statistics.median(x["p99"] for x in lat), 3),
            "max": round(max(x["max"] for x in lat), 3),
        },
        "rounds_p99_ms": [x["p99"] for x in lat],
    }


async def compare(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    moved: dict[str, list[int]] = {m: [] for m in MODES}
    lat: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    paced: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            plain_broker(Path(tmp) / "plain") as plain,
            secure_broker(Path(tmp) / "secure") as secure,
        ):
            brokers = {"plain": plain, "secure": secure}
            checks = await security_checks(secure)
            if not all(checks.values()):
                raise RuntimeError(f"the secure server is not secure: {checks}")
            stage = {m: settings.model_copy(update={"nats": b.nats}) for m, b in brokers.items()}
            ncs = {m: await connect(b.nats, "mumu-bench", role="operator")
                   for m, b in brokers.items()}
            meters = {m: CpuMeter(b.server.pid or 0) for m, b in brokers.items()}
            for nc in ncs.values():
                await apply_bench_stream(nc)
            for n in range(args.rounds):
                order = MODES if n % 2 == 0 else MODES[::-1]
                for m in order:
                    rate, count = await throughput(ncs[m], runtime_chain, stage[m],
                                                   brokers[m].server.url, args, tag=f"{m}-{n}",
                                                   cpu=meters[m])
                    rates[m].append(rate)
                    moved[m].append(count)
                paced.append(rates["plain"][-1] / 2)
                for m in order:
                    lat[m].append(await latency(ncs[m], runtime_chain, stage[m],
                                                brokers[m].server.url, args,
                                                tag=f"{m}-lat-{n}", rate=paced[-1]))
            for nc in ncs.values():
                await nc.drain()
    ratios = [s / p for s, p in zip(rates["secure"], rates["plain"], strict=True)]
    p99_ratios = [s["p99"] / p["p99"] for s, p in zip(lat["secure"], lat["plain"], strict=True)]
    cpu = {m: [(own / args.events * 1e6, server / args.events * 1e6)
               for own, server in meters[m].windows] for m in MODES}
    cpu_ratios = [sum(s) / sum(p) for s, p in zip(cpu["secure"], cpu["plain"], strict=True)]
    result = {m: _summary(rates[m], moved[m], lat[m], cpu[m]) for m in MODES}
    ratio = statistics.median(ratios)
    secure_p99 = result["secure"]["per_hop_ms"]["p99"]
    return {
        "events": args.events,
        "latency_events": args.latency_events,
        "hops": HOPS,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "secure_server": {
            "users": secure.users,
            "tls": "client connections, client certificates required (verify)",
            "checks": checks,
        },
        **result,
        "latency_rates_events_per_s": [round(r, 1) for r in paced],
        "throughput_ratio": round(ratio, 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "throughput_ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "cpu_ratio": round(statistics.median(cpu_ratios), 3),
        "round_cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "p99_ratio": round(statistics.median(p99_ratios), 3),
        "round_p99_ratios": [round(r, 3) for r in p99_ratios],
        "floor": {"throughput_ratio": FLOOR_THROUGHPUT_RATIO, "p99_per_hop_ms": FLOOR_P99_MS},
        "meets_floor": ratio >= FLOOR_THROUGHPUT_RATIO and secure_p99 <= FLOOR_P99_MS,
    }
