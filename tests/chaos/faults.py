"""The faults of the chaos run, injected one after another into the pipeline under load,
each with its times (``Fault``) for the scenario's counts: a stage process or the gateway
SIGKILLed and started again, nats-server killed and restarted, PostgreSQL stopped, and the
reason stage slowed through its settings until the gateway pushes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mumu.broker.jsapi import stream_config
from mumu.broker.streams import load_stream_configs
from mumu.gateway.limits import LagMonitor
from tests.chaos import live
from tests.chaos.conftest import Broker, Database
from tests.chaos.procs import Pipeline
from tests.chaos.scenarios import ChaosLoad, Fault
from tests.loadgen import stored_rows

BETWEEN = 30
"""Finals after one fault has recovered before the next is injected."""
LAG_THRESHOLD = 40
"""``MUMU_GATEWAY__LAG_THRESHOLD``: above the 12 clients' own asks, below a burst."""
BURST = 60
"""Asks arriving at once while reason is slowed (another 60 waiting clients)."""
PG_DOWN = 20.0
NATS_DOWN = 5.0
SLOW = {"MUMU_REASON__MAX_TOKENS": "200", "MUMU_REASON__LLAMA_CPP__CONCURRENCY": "1"}
"""The slowdown, through settings an operator could set: 50 times longer answers from the
embedded model, one at a time (two by default)."""


def hit_by(stream: live.LiveRun, faults: list[Fault]) -> Fault | None:
    """The first fault injected after the stream started (while it was being spoken or
    transcribed): the scenario it counts in."""
    return next((f for f in faults if f.injected >= stream.started), None)


async def until(check: Callable[[], bool], timeout: float, what: str,
                running: asyncio.Task[Any] | None = None) -> float:
    """Poll ``check`` every 0.2 s; returns when it held (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout
    while not check():
        if running is not None and running.done():
            running.result()
            pytest.fail(f"the load ended while waiting for {what}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.2)
    return time.monotonic()


class Run:
    """The pipeline under load and the faults injected so far."""

    def __init__(self, pipe: Pipeline, broker: Broker, db: Database, nc: NATS,
                 load: ChaosLoad) -> None:
        self.pipe, self.broker, self.db, self.nc, self.load = pipe, broker, db, nc, load
        self.faults: list[Fault] = []
        self.streams: list[tuple[live.LiveRun, asyncio.Task[live.LiveRun]]] = []
        self.running: asyncio.Task[list[Any]] | None = None
        self.bursting: asyncio.Task[list[Any]] | None = None

    def finals(self) -> int:
        return sum(1 for o in self.load.outcomes if o.final)

    async def settle(self, fault: Fault) -> None:
        """Until the first final after the fault was lifted, then ``BETWEEN`` more."""
        await until(lambda: self.load.first_final_after(fault.restored) is not None, 120,
                    f"a final after {fault.scenario}", self.running)
        fault.recovered = self.load.first_final_after(fault.restored)
        target = self.finals() + BETWEEN
        await until(lambda: self.finals() >= target, 120, "finals", self.running)

    async def inject(self, fault: Fault, act: Callable[[], Awaitable[None]]) -> None:
        self.faults.append(fault)
        fault.injected = time.monotonic()
        await act()
        fault.restored = time.monotonic()

    def start_stream(self, workspace: str, nc: NATS) -> None:
        run = live.LiveRun(workspace)
        self.streams.append((run, asyncio.create_task(live.stream(nc, run))))

    async def kill_and_restart(self, name: str) -> None:
        async def act() -> None:
            await self.pipe.kill(name)
            await asyncio.sleep(1.0)  # as `mumu up`'s supervisor waits before a restart
            await self.pipe.start(name)
        await self.inject(Fault(f"kill-{name}", f"SIGKILL {name}, restarted after 1 s"), act)
        await self.pipe.wait_ready()
        await self.settle(self.faults[-1])

    async def restart_nats(self) -> None:
        async def act() -> None:
            await self.broker.server.kill()
            await asyncio.sleep(NATS_DOWN)
            await self.broker.server.start()
        fault = Fault("nats-restart", f"SIGKILL nats-server (single node, file storage), "
                      f"restarted after {NATS_DOWN:.0f} s")
        await self.inject(fault, act)
        # every stream is on file storage: a restart loses none, and no operator step
        # is needed before the pipeline is ready again
        await until(lambda: self.nc.is_connected, 30, "the operator's reconnection")
        gone = [c["name"] for c in load_stream_configs()
                if await stream_config(self.nc, c["name"]) is None]
        fault.notes["streams_gone_after_restart"] = gone
        assert gone == [], f"streams lost in the restart: {gone}"
        await self.pipe.wait_ready()
        await self.settle(fault)

    async def postgres_outage(self) -> None:
        async def act() -> None:
            await self.db.server.stop()
            await asyncio.sleep(PG_DOWN)
            await self.db.server.start()
        fault = Fault("postgres-outage", f"PostgreSQL stopped for {PG_DOWN:.0f} s under the "
                      "full pipeline")
        await self.inject(fault, act)
        answered = {o.request_id for o in self.load.outcomes
                    if o.done_at is not None and o.done_at <= fault.restored}

        async def caught_up() -> bool:
            rows = await stored_rows(self.db.admin_url)
            return all(rows["answers"].get(rid) for rid in answered)

        deadline = time.monotonic() + 120
        while not await caught_up():
            assert time.monotonic() < deadline, "persist did not catch up in 120 s"
            await asyncio.sleep(0.5)
        fault.recovered = time.monotonic()  # every answer given before it is stored
        fault.notes["answered_during_outage"] = sum(
            1 for o in self.load.outcomes
            if o.done_at is not None and fault.injected <= o.done_at <= fault.restored)
        target = self.finals() + BETWEEN
        await until(lambda: self.finals() >= target, 120, "finals", self.running)

    async def slow_reason(self, burst: ChaosLoad) -> list[Any]:
        """Reason restarted with slower settings and a burst of asks: its lag passes the
        threshold and the gateway answers 503 + Retry-After; the settings restored, the
        lag drains and every ask completes."""
        monitor = LagMonitor(self.nc, LAG_THRESHOLD, 0.5)
        peak: dict[str, int] = {}

        async def act() -> None:
            await self.pipe.children["reason"].stop(20)
            await self.pipe.start("reason", SLOW)
            await self.pipe.wait_ready()
            bursting = asyncio.create_task(burst.run())
            deadline = time.monotonic() + 60
            while not self._pushed_back(fault, burst):
                await monitor.check_once()
                for name, pending in monitor.lag.items():
                    peak[name] = max(peak.get(name, 0), pending)
                assert time.monotonic() < deadline, f"no 503 in 60 s; lag {monitor.lag}"
                await asyncio.sleep(0.5)
            await self.pipe.children["reason"].stop(20)  # lift: the usual settings
            await self.pipe.start("reason")
            self.bursting = bursting

        fault = Fault("slow-reason", "reason restarted with MUMU_REASON__MAX_TOKENS=200 and "
                      f"MUMU_REASON__LLAMA_CPP__CONCURRENCY=1 plus a burst of {BURST} asks, "
                      "then restarted with its usual settings")
        await self.inject(fault, act)
        await self.pipe.wait_ready()
        while True:  # the lag drains below the gateway's threshold
            await monitor.check_once()
            if not monitor.reasons:
                break
            assert time.monotonic() - fault.restored < 120, f"lag did not drain: {monitor.lag}"
            await asyncio.sleep(0.5)
        drained = time.monotonic()
        assert self.bursting is not None
        burst_outcomes = await asyncio.wait_for(self.bursting, 180)
        fault.recovered = drained
        fault.notes.update({
            "peak_lag": dict(sorted(peak.items())),
            "refused_503_with_retry_after": sum(
                1 for o in self.load.outcomes + burst.outcomes for (at, status, ra, _) in o.refusals
                if status == 503 and ra and fault.injected <= at <= fault.restored),
            "lag_drained_seconds_after_lift": round(drained - fault.restored, 1),
        })
        fault.faults += (f" (peak lag {max(peak.values(), default=0)}, threshold {LAG_THRESHOLD}: "
                         f"{fault.notes['refused_503_with_retry_after']} asks refused with 503 "
                         "+ Retry-After)")
        return burst_outcomes

    def _pushed_back(self, fault: Fault, burst: ChaosLoad) -> bool:
        return any(status == 503 and ra is not None and "reason" in body
                   for o in self.load.outcomes + burst.outcomes
                   for (at, status, ra, body) in o.refusals if at >= fault.injected)
