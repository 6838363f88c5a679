"""Chaos on the whole pipeline, in ONE load run: each stage and the gateway a process of
its own, a real nats-server (file storage) and a real PostgreSQL; text asks, uploaded audio
and live streams over NATS from two workspaces. In turn: each stage process and then the
gateway SIGKILLed and started again, nats-server killed and restarted, PostgreSQL stopped
for 20 s, and the reason stage slowed through its settings until the gateway pushes back.

Afterwards nothing JetStream acknowledged or a client was told is accepted is missing a
row, nothing is stored twice, every client has its final, every live utterance has one
final with the words spoken. Each fault's counts (the requests first sent while it was the
latest fault) go to ``benchmarks/results/chaos-<scenario>.json``; docs/reliability.md is
generated from those files."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mumu.broker.jsapi import stream_config
from mumu.broker.streams import apply_all, load_stream_configs
from mumu.broker.workspaces import ensure_workspaces
from mumu.gateway.limits import LagMonitor
from mumu.stages.transcribe.model import assemble_bundled
from tests.chaos import live
from tests.chaos.conftest import Broker, Database
from tests.chaos.procs import STAGE_NAMES, Pipeline, child_env
from tests.chaos.scenarios import ChaosLoad, Fault, dead_letters, window_record
from tests.conftest import DATA, operator_connection
from tests.loadgen import Acked, acknowledged_requests, stored_rows, wait_stored, write_result

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(600)]

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results"
TOTAL = 1000
CLIENTS = 12
AUDIO_EVERY = 100
CLIPS = sorted((DATA / "load").glob("q*.wav"))
BETWEEN = 30
"""Finals after one fault has recovered before the next is injected."""
LAG_THRESHOLD = 40
"""``MUMU_GATEWAY__LAG_THRESHOLD``: above the 12 clients' own asks, below a burst."""
BURST = 60
"""Asks arriving at once while reason is slowed (another 60 waiting clients)."""
LIVE_WAIT = 240.0
"""Longest wait after the load for the live utterances' answers (each step of a live
stream is a Whisper decode: slow on a busy 2-core machine)."""
PG_DOWN = 20.0
NATS_DOWN = 5.0
SLOW = {"MUMU_REASON__MAX_TOKENS": "200", "MUMU_STAGE__CONCURRENCY": "2"}
"""The slowdown, through settings an operator could set: 50 times longer answers (at the
backend's 10 ms a token), two at a time instead of 16."""


def hit_by(stream: live.LiveRun, faults: list[Fault]) -> Fault | None:
    """The first fault injected after the stream started (while it was being spoken or
    transcribed): the scenario it counts in."""
    return next((f for f in faults if f.injected >= stream.started), None)


def settings_env(db: Database, data_dir: Path, models: Path, llm: str) -> dict[str, str]:
    return child_env({
        "MUMU_REASON__BACKEND": "openai", "MUMU_REASON__OPENAI__BASE_URL": llm,
        "MUMU_DATA_DIR": str(data_dir),
        "MUMU_DATABASE_URL": db.app_url, "MUMU_MASTER_KEYS": db.master_keys,
        "MUMU_GATEWAY__SESSION_SECRET": secrets.token_urlsafe(32),
        "MUMU_GATEWAY__RATE_LIMIT_PER_SECOND": "1000", "MUMU_GATEWAY__RATE_LIMIT_BURST": "1000",
        "MUMU_GATEWAY__MAX_WAITING": "200", "MUMU_GATEWAY__MAX_WAITING_PER_WORKSPACE": "100",
        "MUMU_GATEWAY__LAG_THRESHOLD": str(LAG_THRESHOLD),
        "MUMU_GATEWAY__LAG_CHECK_INTERVAL": "0.5",
        "MUMU_REASON__MAX_TOKENS": "4", "MUMU_REASON__MAX_TURNS": "0",
        "MUMU_TRANSCRIBE__MODEL_CACHE_DIR": str(models), "MUMU_TRANSCRIBE__CPU_THREADS": "1",
        "MUMU_TRANSCRIBE__LIVE__STEP": "2",  # half the decodes of the 1 s default
        "MUMU_STAGE__ACK_WAIT": "10", "MUMU_STAGE__FETCH_TIMEOUT": "0.2",
        "MUMU_LOG_LEVEL": "INFO",
    })


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
        # a memory-storage stream does not survive a restart: what is gone is recorded,
        # and put back as the operator would (`mumu streams apply`)
        await until(lambda: self.nc.is_connected, 30, "the operator's reconnection")
        gone = [c["name"] for c in load_stream_configs()
                if await stream_config(self.nc, c["name"]) is None]
        fault.notes["streams_gone_after_restart"] = gone
        if gone:
            await apply_all(self.nc)
            fault.faults += f"; then `mumu streams apply` (gone: {', '.join(gone)})"
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
                      f"MUMU_STAGE__CONCURRENCY=2 plus a burst of {BURST} asks, "
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


async def test_one_load_run_through_every_fault_loses_and_duplicates_nothing(
    tmp_path: Path, chaos_pg: Database, chaos_nats: Broker, echo_llm: str,
) -> None:
    began = time.monotonic()
    tenants = chaos_pg.tenants
    models = tmp_path.parent / "models"
    await asyncio.to_thread(assemble_bundled, models)
    nc = await operator_connection(chaos_nats.server.url, chaos_nats.users,
                                   max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    await apply_all(nc)
    await ensure_workspaces(nc, [t.workspace for t in tenants])
    pipe = Pipeline(chaos_nats.server, chaos_pg.server, chaos_nats.users,
                    settings_env(chaos_pg, tmp_path / "mumu", models, echo_llm), tmp_path / "logs")
    producers = {t.workspace: await live.producer(chaos_nats.server.url,
                                                  chaos_nats.producer_seeds[t.workspace],
                                                  t.workspace) for t in tenants}
    load = ChaosLoad(pipe.gateway, tenants, CLIPS, total=TOTAL, clients=CLIENTS,
                     audio_every=AUDIO_EVERY)
    burst = ChaosLoad(pipe.gateway, tenants, CLIPS, total=BURST, clients=BURST, audio_every=0)
    run = Run(pipe, chaos_nats, chaos_pg, nc, load)
    try:
        await pipe.start_all()
        started = time.monotonic()
        run.running = asyncio.create_task(load.run())
        await until(lambda: run.finals() >= BETWEEN, 120, "the first finals", run.running)
        for name in STAGE_NAMES:
            if name == "transcribe":  # live streams from both workspaces through the kill
                for t in tenants:
                    run.start_stream(t.workspace, producers[t.workspace])
                await asyncio.sleep(3.0)
            await run.kill_and_restart(name)
        await run.kill_and_restart("gateway")
        run.start_stream(tenants[0].workspace, producers[tenants[0].workspace])
        await asyncio.sleep(2.0)
        await run.restart_nats()
        await run.postgres_outage()
        burst_outcomes = await run.slow_reason(burst)
        outcomes = await asyncio.wait_for(run.running, 300)
        load_seconds = time.monotonic() - started
        streams = [await asyncio.wait_for(task, 120) for _, task in run.streams]
        acked_all = await acknowledged_requests(nc)
        live_ids = {s.request_id for s in streams}
        acked = Acked(Counter({r: n for r, n in acked_all.counts.items() if r not in live_ids}),
                      acked_all.text)
        rows = await wait_stored(chaos_pg.admin_url, acked, timeout=120)
        utterances = set().union(*(s.utterance_ids for s in streams))
        deadline = time.monotonic() + LIVE_WAIT
        while not all(rows["answers"].get(u) for u in utterances) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            rows = await stored_rows(chaos_pg.admin_url)
        partials: list[Any] = []
        finals: list[Any] = []
        for t in tenants:
            p, f = await live.transcripts(nc, t.workspace)
            partials += p
            finals += f
        letters = await dead_letters(nc)
    finally:
        for producer in producers.values():
            await producer.drain()
        await pipe.stop_all()
        await nc.drain()

    everything = outcomes + burst_outcomes
    first_sent = load.first_sent | burst.first_sent
    live_problems = [p for s in streams for p in live.problems(s, partials, finals)]
    ends = [f.injected for f in run.faults[1:]] + [float("inf")]
    records = []
    for fault, end in zip(run.faults, ends, strict=True):
        mine = [s for s in streams if hit_by(s, run.faults) is fault]
        ids = set().union(*(s.utterance_ids for s in mine)) if mine else set()
        live_counts = {
            "live_streams": len(mine), "live_utterances": len(ids),
            "lost": sum(1 for u in ids if not rows["answers"].get(u)
                        or not rows["transcripts"].get(u)),
            "duplicated": sum(1 for u in ids if rows["answers"].get(u, 0) > 1
                              or rows["transcripts"].get(u, 0) > 1),
        } if mine else {}
        record = {"benchmark": f"chaos-{fault.scenario}",
                  "when": datetime.now(UTC).isoformat(timespec="seconds"),
                  **window_record(fault, end, everything, first_sent, acked, rows, letters,
                                  live_counts)}
        if mine:
            record["live_problems"] = [p for s in mine for p in live.problems(s, partials, finals)]
            record["result"] = "fail" if record["live_problems"] else record["result"]
        records.append(record)
        write_result(RESULTS / f"chaos-{fault.scenario}.json", record)
    print(f"chaos run: {len(everything)} asks + {len(streams)} live streams in "
          f"{load_seconds:.0f} s (test {time.monotonic() - began:.0f} s)")

    # every ask was sent and every client got its final (a 503/504 is retried)
    assert len(outcomes) == TOTAL
    assert [o for o in everything if not o.final] == []
    assert not live_problems, live_problems
    # the same from the ground truth: JetStream's and PostgreSQL's
    asked = {o.request_id for o in everything}
    assert acked.ids >= asked, "every ask was acknowledged by JetStream"
    assert all(n == 1 for rid, n in acked.counts.items() if rid), "one ingest message per ask"
    assert all(rows["answers"][rid] == 1 for rid in asked)
    audio = asked - acked.text
    assert len(audio) >= TOTAL // AUDIO_EVERY
    assert all(rows["transcripts"][rid] == 1 for rid in audio)
    assert not acked.text & set(rows["transcripts"]), "a text ask has no transcript row"
    assert all(rows["answers"][u] == 1 and rows["transcripts"][u] == 1 for u in utterances)
    assert not letters, letters
    # every fault really happened in the run, and each shows its own pass
    assert [f.scenario for f in run.faults] == [
        *(f"kill-{n}" for n in STAGE_NAMES), "kill-gateway", "nats-restart",
        "postgres-outage", "slow-reason"]
    assert [r["scenario"] for r in records if r["result"] != "pass"] == [], records
    slow = records[-1]
    assert slow["refused_503_with_retry_after"] > 0
    assert max(slow["peak_lag"].values()) > LAG_THRESHOLD, slow["peak_lag"]
