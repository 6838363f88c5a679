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
import contextlib
import itertools
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

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
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def child(args: list[str], env: dict[str, str]) -> AsyncIterator[tuple[int, str]]:
    """A server process printing ``<name>: <url>`` first; yields (pid, url)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        if ": " not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        yield proc.pid, line.split(": ", 1)[1]
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


class Clients:
    """N websockets; each message's latency (from the time it carries) is recorded."""

    def __init__(self, extract: Callable[[dict[str, Any]], float | None]) -> None:
        self.extract = extract
        self.latencies: list[float] = []
        self.received = 0
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.target = 0
        self.all_in = asyncio.Event()

    async def open(self, http: aiohttp.ClientSession, urls: list[str],
                   first: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]) -> None:
        sem = asyncio.Semaphore(100)

        async def one(url: str) -> aiohttp.ClientWebSocketResponse:
            async with sem:
                ws = await http.ws_connect(url, max_msg_size=0)
                await first(ws)
                return ws

        self.sockets = list(await asyncio.gather(*(one(u) for u in urls)))
        self.tasks = [asyncio.create_task(self._read(ws)) for ws in self.sockets]

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            sent = self.extract(json.loads(msg.data))
            if sent is None:
                continue
            self.latencies.append(time.time() - sent)
            self.received += 1
            if self.target and self.received >= self.target:
                self.all_in.set()

    def expect(self, count: int) -> None:
        self.received, self.latencies, self.target = 0, [], count
        self.all_in.clear()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


async def paced(rate: float, seconds: float, send: Callable[[int], Awaitable[None]]) -> int:
    """Call ``send(n)`` ``rate`` times a second for ``seconds``, in 10 ms ticks."""
    total = int(rate * seconds)
    start = time.perf_counter()
    n = 0
    while n < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while n < due:
            await send(n)
            n += 1
        await asyncio.sleep(0.01)
    return total


def stats(clients: Clients, count: int, elapsed: float) -> dict[str, float]:
    ms = [v * 1000 for v in clients.latencies]
    return {"messages": count, "received": clients.received,
            "p50_ms": round(percentile(ms, 0.50), 2), "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms, default=float("nan")), 2),
            "rate_per_s": round(clients.received / elapsed, 1) if elapsed else 0.0}


async def measure(
    clients: Clients, count: int, send: Callable[[int], Awaitable[None]], *,
    flush: Callable[[], Awaitable[None]], rate: float | None, seconds: float,
) -> dict[str, float]:
    clients.expect(count)
    start = time.perf_counter()
    if rate is None:
        for n in range(count):
            await send(n)
            if n % 500 == 499:
                await flush()
        await flush()
    else:
        await paced(rate, seconds, send)
        await flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(clients.all_in.wait(), timeout=60)
    return stats(clients, count, time.perf_counter() - start)


@dataclass
class Side:
    """One server under test: its clients, how to send one message, its memory figures."""

    clients: Clients
    send: Callable[[int], Awaitable[None]]
    flush: Callable[[], Awaitable[None]]
    rss_before_kib: int
    memory_per_connection_kib: float
    pids: dict[str, int] = field(default_factory=dict)
    """The processes working for this side (CPU per message is reported for each)."""
    throughput: list[dict[str, float]] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)

    async def measure(self, count: int, rate: float | None, seconds: float) -> dict[str, float]:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        result = await measure(self.clients, count, self.send, flush=self.flush, rate=rate,
                               seconds=seconds)
        for name, pid in self.pids.items():
            used = cpu_seconds(pid) - before[name]
            result[f"cpu_us_per_message_{name}"] = round(used / max(count, 1) * 1e6, 1)
        return result

    def summary(self) -> dict[str, Any]:
        rates = [t["rate_per_s"] for t in self.throughput]
        middle = self.throughput[rates.index(statistics.median_low(rates))]
        return {"rss_before_kib": self.rss_before_kib,
                "memory_per_connection_kib": round(self.memory_per_connection_kib, 1),
                "latency": self.latency, "throughput": middle,
                "throughput_rates_per_s": rates}


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
                        child(["-m", "mumu.bench.gateway", "--echo-server"], {}) as (e_pid, e_url)):
                sides = {
                    "mumu": await _mumu(http, nc, gw_pid, gw_url, signer=signer, args=args,
                                        padding=padding),
                    "baseline": await _echo(http, e_pid, e_url, args, padding),
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


async def _mumu(http: aiohttp.ClientSession, nc: Any, pid: int, url: str, *,
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


async def _echo(http: aiohttp.ClientSession, pid: int, url: str, args: argparse.Namespace,
                padding: str) -> Side:
    n = args.sessions
    before = rss_kib(pid)

    async def nothing(_: aiohttp.ClientWebSocketResponse) -> None:
        return None

    clients = Clients(lambda m: float(m["t"]))
    await clients.open(http, [url.replace("http://", "ws://") + "/ws"] * n, nothing)
    await asyncio.sleep(1.0)
    per_conn = (rss_kib(pid) - before) / n

    async def send(k: int) -> None:
        await clients.sockets[k % n].send_str(json.dumps({"t": time.time(), "p": padding}))

    async def flush() -> None:
        await asyncio.sleep(0)

    return Side(clients, send, flush, before, per_conn)


async def echo_server() -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"echo: http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    result = asyncio.run(bench(args))
    write_result("gateway", result)
    return result


if __name__ == "__main__":
    if "--echo-server" in sys.argv:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(echo_server())
