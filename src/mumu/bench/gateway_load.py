"""The load side of ``mumu bench gateway``: websocket clients, pacing, latency and CPU
figures of the processes under test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


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
    prepare: Callable[[], Awaitable[None]] | None = None
    """Run before each measurement, outside its clock."""
    throughput: list[dict[str, float]] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)

    async def measure(self, count: int, rate: float | None, seconds: float) -> dict[str, float]:
        if self.prepare is not None:
            await self.prepare()
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
