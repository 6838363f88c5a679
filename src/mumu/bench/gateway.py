"""Gateway websocket fan-out: N sessions receiving answer deltas vs a bare aiohttp echo server.

Both servers run as child processes on this machine, at the same time, in the same run.
Phase 1 (latency): deltas are published to ``MUMU_RESULTS`` at a steady total rate, each
carrying its publish time; every session's websocket receives its own. The echo baseline
sends the same payload size at the same rate and times the round trip. Phase 2
(throughput, paired rounds with alternating order): as many messages as possible, all at
once; the message rate each side delivers to its clients; the ratio is the median of the
rounds' ratios. Memory per connection is the server's RSS growth divided by the
connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from mumu.bench.gateway_echo import echo_side
from mumu.bench.gateway_load import Clients, Side, child, rss_kib
from mumu.bench.results import write_result
from mumu.broker.connect import connect
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerDelta
from mumu.gateway.tokens import TokenSigner
from mumu.settings import NatsSettings, Settings

WORKSPACE = "bench-gateway"
P99_FLOOR_MS = 50.0
RATE_FLOOR = 0.7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=1000, help="concurrent websockets")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="deltas per second, all sessions together (latency phase)")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase length")
    parser.add_argument("--burst", type=int, default=20,
                        help="messages per session in each throughput round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="paired throughput rounds (the ratio is their median)")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Both servers up at once; latency once each, then paired throughput rounds with
    the order alternating, so both sides see the same machine (the ratio is the median
    of the rounds' ratios)."""
    n = args.sessions
    padding = "x" * 200
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            nc = await connect(NatsSettings(url=server.url), name="bench-gateway")
            await apply_all(nc)
            secret = secrets.token_hex(16)
            signer = TokenSigner(SecretStr(secret), 3600)
            env = {"MUMU_NATS__URL": server.url, "MUMU_GATEWAY__SESSION_SECRET": secret,
                   "MUMU_GATEWAY__PORT": "0", "MUMU_LOG_LEVEL": "WARNING",
                   "MUMU_GATEWAY__CLIENT_QUEUE": str(max(1024, args.burst * 4))}
            connector = aiohttp.TCPConnector(limit=0)
            async with (aiohttp.ClientSession(connector=connector) as http,
                        child(["-m", "mumu", "gateway"], env) as (gw_pid, gw_url),
                        child(["-m", "mumu.bench.gateway_echo"], {}) as (e_pid, e_url)):
                sides = {
                    "mumu": await mumu_side(http, nc, gw_pid, gw_url, signer=signer, args=args,
                                        padding=padding),
                    "baseline": await echo_side(http, e_pid, e_url, args, padding),
                }
                me = os.getpid()
                sides["mumu"].pids = {"gateway": gw_pid, "nats_server": server.pid or me,
                                      "load_generator": me}
                sides["baseline"].pids = {"echo_server": e_pid, "load_generator": me}
                for side in sides.values():
                    side.latency = await side.measure(int(args.rate * args.seconds), args.rate,
                                                      args.seconds)
                ratios = []
                for round_ in range(args.rounds):
                    order = ["mumu", "baseline"] if round_ % 2 == 0 else ["baseline", "mumu"]
                    for name in order:
                        sides[name].throughput.append(
                            await sides[name].measure(n * args.burst, None, 0))
                    ratios.append(sides["mumu"].throughput[-1]["rate_per_s"]
                                  / sides["baseline"].throughput[-1]["rate_per_s"])
                for side in sides.values():
                    await side.clients.close()
            await nc.drain()
    m, b = sides["mumu"].summary(), sides["baseline"].summary()
    ratio = statistics.median(ratios)
    delivered = all(t["received"] == t["messages"]
                    for t in (m["latency"], *sides["mumu"].throughput))
    return {
        "sessions": n, "rate": args.rate, "seconds": args.seconds, "burst": args.burst,
        "rounds": args.rounds, "mumu": m, "baseline": b,
        "rate_ratio": round(ratio, 3),
        "rate_ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
        "floor": {"p99_ms": P99_FLOOR_MS, "rate_ratio": RATE_FLOOR},
        "met": {"p99": m["latency"]["p99_ms"] <= P99_FLOOR_MS, "rate": ratio >= RATE_FLOOR,
                "all_delivered": delivered},
    }


async def mumu_side(http: aiohttp.ClientSession, nc: Any, pid: int, url: str, *,
                signer: TokenSigner, args: argparse.Namespace, padding: str) -> Side:
    n = args.sessions
    before = rss_kib(pid)

    async def ready(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.receive(timeout=30)

    def sent_at(m: dict[str, Any]) -> float | None:
        return float(m["text"].split(" ", 1)[0]) if m.get("type") == "answer.delta" else None

    clients = Clients(sent_at)
    ws_url = url.replace("http://", "ws://") + "/api/ws?token="
    await clients.open(http, [ws_url + signer.issue(WORKSPACE, f"s{i}")[0] for i in range(n)],
                       ready)
    await asyncio.sleep(1.0)
    per_conn = (rss_kib(pid) - before) / n
    subject = subjects.ANSWER_DELTA.for_workspace(WORKSPACE)

    serial = itertools.count()
    # what a stage publishes, serialised once per session (the model's cost is the stage's)
    templates = [
        AnswerDelta(event_id="EVENTID", request_id=f"r{i}", workspace_id=WORKSPACE,
                    session_id=f"s{i}", index=0, text=f"SENTAT {padding}").model_dump_json()
        for i in range(n)
    ]

    async def send(k: int) -> None:
        event_id = f"b{next(serial)}"
        payload = templates[k % n].replace("EVENTID", event_id, 1).replace(
            "SENTAT", f"{time.time():.6f}", 1)
        await nc.publish(subject, payload.encode(), headers={h.MSG_ID: event_id})

    return Side(clients, send, nc.flush, before, per_conn)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(bench(args))
    write_result("gateway", result)
    return result
