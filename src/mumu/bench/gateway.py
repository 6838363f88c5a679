"""Gateway websocket fan-out: N sessions receiving answer deltas vs a bare aiohttp echo server.

Both servers run as child processes on this machine, at the same time, in the same run.
Phase 1 (latency): deltas are published to ``MUMU_RESULTS`` at a steady total rate, each
carrying its publish time; every session's websocket receives its own. The echo baseline
sends the same payload size at the same rate and times the round trip. Phase 2
(throughput: a warm-up burst each, then paired rounds with alternating order): as many
messages as possible, all at once; the message rate each side delivers to its clients;
the ratio is the median of the rounds' ratios. Memory per connection is the server's RSS
growth divided by the connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from mumu.contracts.event_types import EventType
from mumu.contracts.events import AnswerDelta
from mumu.gateway.tokens import TokenSigner
from mumu.settings import NatsSettings, Settings

WORKSPACE = "bench-gateway"
PER_WORKSPACE_ROUND = 10_000
"""Events one workspace receives in a measurement: MUMU_RESULTS keeps at most 20,000 per
workspace subject (issue 14's tenant bound), so the sessions are spread over workspaces
and every measurement starts on an emptied stream."""
PADDING = "x" * 200
P99_FLOOR_MS = 50.0
RATE_FLOOR = 0.8
"""The median of the rounds' rate ratios must reach this (issue 12) ..."""
ROUND_FLOOR = 0.7
"""... and no single round may fall below this."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=1000, help="concurrent websockets")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="deltas per second, all sessions together (latency phase)")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase length")
    parser.add_argument("--burst", type=int, default=50,
                        help="messages per session in each throughput round (20,000-message "
                        "rounds lasted 0.3-0.4 s: too short to measure a rate on a shared "
                        "machine)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="paired throughput rounds (the ratio is their median)")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every server up at once; latency once each, then throughput rounds with the order
    rotating, so every side sees the same machine (a ratio is the median of the rounds')."""
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(EmbeddedNats(Path(tmp) / "nats"))
            http = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
            sides = {"mumu": await gateway_side(stack, http, server, ["-m", "mumu", "gateway"],
                                                args)}
            e_pid, e_url = await stack.enter_async_context(
                child(["-m", "mumu.bench.gateway_echo"], {}))
            sides["baseline"] = await echo_side(http, e_pid, e_url, args, PADDING)
            sides["baseline"].pids = {"echo_server": e_pid, "load_generator": os.getpid()}
            try:
                return await measure_all(sides, args)
            finally:
                for side in sides.values():
                    await side.clients.close()


async def gateway_side(stack: contextlib.AsyncExitStack, http: aiohttp.ClientSession,
                       server: EmbeddedNats, command: list[str], args: argparse.Namespace
                       ) -> Side:
    """A gateway process on its own nats-server, with its clients connected."""
    nc = await connect(NatsSettings(url=server.url), name="bench-gateway")
    stack.push_async_callback(nc.drain)
    await apply_all(nc)
    secret = secrets.token_hex(16)
    env = {"MUMU_NATS__URL": server.url, "MUMU_GATEWAY__SESSION_SECRET": secret,
           "MUMU_GATEWAY__PORT": "0", "MUMU_LOG_LEVEL": "WARNING",
           "MUMU_GATEWAY__CLIENT_QUEUE": str(max(1024, args.burst * 4)),
           # every benchmark socket is in one workspace: the per-workspace cap would refuse
           # the load before it measures anything
           "MUMU_GATEWAY__MAX_SOCKETS_PER_WORKSPACE": "100000",
           "MUMU_GATEWAY__MAX_SOCKETS": "100000"}
    pid, url = await stack.enter_async_context(child(command, env))
    side = await mumu_side(http, nc, pid, url, signer=TokenSigner(SecretStr(secret), 3600),
                           args=args, padding=PADDING)
    side.pids = {"gateway": pid, "nats_server": server.pid or os.getpid(),
                 "load_generator": os.getpid()}
    return side


async def measure_all(sides: dict[str, Side], args: argparse.Namespace) -> dict[str, Any]:
    for side in sides.values():
        side.latency = await side.measure(int(args.rate * args.seconds), args.rate, args.seconds)
    # one uncounted warm-up burst each: the first burst a process took ran slower on
    # every side (the first round's ratio was the lowest in every run)
    for side in sides.values():
        await side.measure(args.sessions * args.burst, None, 0)
    names = list(sides)
    ratios: dict[str, list[float]] = {name: [] for name in names if name != "mumu"}
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        if round_ // len(names) % 2:
            order.reverse()
        for name in order:
            sides[name].throughput.append(
                await sides[name].measure(args.sessions * args.burst, None, 0))
        mumu_rate = sides["mumu"].throughput[-1]["rate_per_s"]
        for name, series in ratios.items():
            other = sides[name].throughput[-1]
            if not other["rate_per_s"]:
                raise RuntimeError(f"{name} delivered {other['received']} of "
                                   f"{other['messages']} messages: no rate to compare")
            series.append(mumu_rate / other["rate_per_s"])
    summaries = {name: side.summary() for name, side in sides.items()}
    m = summaries["mumu"]
    ratio = statistics.median(ratios["baseline"])
    delivered = all(t["received"] == t["messages"]
                    for side in (s for n, s in sides.items() if n != "baseline")
                    for t in (side.latency, *side.throughput))
    result: dict[str, Any] = {
        "sessions": args.sessions, "rate": args.rate, "seconds": args.seconds,
        "burst": args.burst, "rounds": args.rounds, **summaries,
        "rate_ratio": round(ratio, 3),
        "rate_ratios": [round(r, 3) for r in ratios["baseline"]],
        "rate_ratio_min_max": [round(min(ratios["baseline"]), 3),
                               round(max(ratios["baseline"]), 3)],
        "floor": {"p99_ms": P99_FLOOR_MS, "rate_ratio": RATE_FLOOR,
                  "rate_ratio_round": ROUND_FLOOR},
        "met": {"p99": m["latency"]["p99_ms"] <= P99_FLOOR_MS,
                "rate": ratio >= RATE_FLOOR and min(ratios["baseline"]) >= ROUND_FLOOR,
                "all_delivered": delivered},
    }
    return result


async def mumu_side(http: aiohttp.ClientSession, nc: Any, pid: int, url: str, *,
                signer: TokenSigner, args: argparse.Namespace, padding: str) -> Side:
    n = args.sessions
    before = rss_kib(pid)

    async def ready(ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.receive(timeout=30)

    def sent_at(m: dict[str, Any]) -> float | None:
        if m.get("type") != EventType.ANSWER_DELTA:
            return None
        return float(m["text"].split(" ", 1)[0])

    clients = Clients(sent_at)
    ws_url = url.replace("http://", "ws://") + "/api/ws?token="
    workspaces = [f"{WORKSPACE}-{w}"
                  for w in range(max(1, -(-n * args.burst // PER_WORKSPACE_ROUND)))]
    owner = [workspaces[i % len(workspaces)] for i in range(n)]
    await clients.open(http, [ws_url + signer.issue(owner[i], f"s{i}")[0] for i in range(n)],
                       ready)
    await asyncio.sleep(1.0)
    per_conn = (rss_kib(pid) - before) / n
    subject = [subjects.ANSWER_DELTA.for_workspace(owner[i]) for i in range(n)]

    serial = itertools.count()
    # what a stage publishes, serialised once per session (the model's cost is the stage's)
    templates = [
        AnswerDelta(event_id="EVENTID", request_id=f"r{i}", workspace_id=owner[i],
                    session_id=f"s{i}", index=0, text=f"SENTAT {padding}").model_dump_json()
        for i in range(n)
    ]

    async def send(k: int) -> None:
        event_id = f"b{next(serial)}"
        payload = templates[k % n].replace("EVENTID", event_id, 1).replace(
            "SENTAT", f"{time.time():.6f}", 1)
        await nc.publish(subject[k % n], payload.encode(), headers={h.MSG_ID: event_id})

    async def empty_results() -> None:
        await nc.jetstream().purge_stream(subjects.STREAM_RESULTS)

    return Side(clients, send, nc.flush, before, per_conn, prepare=empty_results)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(bench(args))
    write_result("gateway", result)
    return result
