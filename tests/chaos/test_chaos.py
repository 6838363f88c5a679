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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mumu.broker.roles import Role
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspaces
from mumu.stages.transcribe.model import assemble_bundled
from tests.chaos import live
from tests.chaos.conftest import Broker, Database
from tests.chaos.faults import BETWEEN, BURST, LAG_THRESHOLD, Run, hit_by, until
from tests.chaos.procs import STAGE_NAMES, Pipeline, child_env
from tests.chaos.scenarios import (
    RESULTS,
    ChaosLoad,
    dead_letters,
    regenerate_report,
    results_lock,
    window_record,
)
from tests.conftest import DATA, operator_connection
from tests.loadgen import Acked, acknowledged_requests, stored_rows, wait_stored, write_result
from tests.secrets_scan import Secret, distinctive, password_of, save_metrics, scan, words_of

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(600)]
# ``alone``: a load run on the product's own models, timed under faults; beside the
# parallel run's model tests it took over 10 minutes on 2 cores. .ci/run runs it beside
# the cluster failover only (each on servers of its own; 404 s together, both passing)

TOTAL = 1000
CLIENTS = 12
AUDIO_EVERY = 20
"""One ask in 20 is an uploaded clip (5 %; one in 100 left most fault windows without one)."""
LASTING = 200.0
"""Seconds the load lasts at least: on a quiet machine the 1,000 asks were all answered
before the PostgreSQL outage was injected (the faults take about 3 minutes)."""
CLIPS = sorted((DATA / "load").glob("q*.wav"))
LIVE_WAIT = 240.0
"""Longest wait after the load for the live utterances' answers (each step of a live
stream is a Whisper decode: slow on a busy 2-core machine)."""


def settings_env(db: Database, data_dir: Path, models: Path) -> dict[str, str]:
    """The product's own settings, made affordable: the default embedded language model
    (llama.cpp, SmolLM2-135M) with 2-token answers and no remembered turns, Whisper on one
    thread with half the live decode steps."""
    return child_env({
        "MUMU_REASON__LLAMA_CPP__N_THREADS": "1",
        "MUMU_DATA_DIR": str(data_dir),
        "MUMU_DATABASE_URL": db.app_url, "MUMU_MASTER_KEYS": db.master_keys,
        "MUMU_GATEWAY__SESSION_SECRET": secrets.token_urlsafe(32),
        "MUMU_GATEWAY__RATE_LIMIT_PER_SECOND": "1000", "MUMU_GATEWAY__RATE_LIMIT_BURST": "1000",
        "MUMU_GATEWAY__MAX_WAITING": "200", "MUMU_GATEWAY__MAX_WAITING_PER_WORKSPACE": "100",
        "MUMU_GATEWAY__LAG_THRESHOLD": str(LAG_THRESHOLD),
        "MUMU_GATEWAY__LAG_CHECK_INTERVAL": "0.5",
        "MUMU_REASON__MAX_TOKENS": "2", "MUMU_REASON__MAX_TURNS": "0",
        "MUMU_TRANSCRIBE__MODEL_CACHE_DIR": str(models), "MUMU_TRANSCRIBE__CPU_THREADS": "1",
        "MUMU_TRANSCRIBE__LIVE__STEP": "2",  # half the decodes of the 1 s default
        "MUMU_STAGE__ACK_WAIT": "10", "MUMU_STAGE__FETCH_TIMEOUT": "0.2",
        "MUMU_LOG_LEVEL": "INFO",
    })


def run_secrets(pipe: Pipeline, db: Database, broker: Broker) -> list[Secret]:
    """Every secret the run handed out: API keys, passwords, master keys, the session
    secret, each service's and producer's nkey seed."""
    found = [Secret(f"api key of {t.workspace}", t.api_key) for t in db.tenants]
    found += [*password_of(db.app_url), *password_of(db.admin_url)]
    found += [Secret("master key", k.partition(":")[2]) for k in db.master_keys.split(",")]
    found.append(Secret("session secret", pipe.env["MUMU_GATEWAY__SESSION_SECRET"]))
    seeds = [broker.users.seed_file(role) for role in Role] + list(broker.producer_seeds.values())
    found += [Secret(f"nkey seed {p.stem}", p.read_text().strip()) for p in seeds if p.exists()]
    return found


async def test_one_load_run_through_every_fault_loses_and_duplicates_nothing(
    tmp_path: Path, chaos_pg: Database, chaos_nats: Broker,
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
                    settings_env(chaos_pg, tmp_path / "mumu", models), tmp_path / "logs")
    producers = {t.workspace: await live.producer(chaos_nats.server.url,
                                                  chaos_nats.producer_seeds[t.workspace],
                                                  t.workspace) for t in tenants}
    load = ChaosLoad(pipe.gateway, tenants, CLIPS, total=TOTAL, clients=CLIENTS,
                     audio_every=AUDIO_EVERY, lasting=LASTING)
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
        async with aiohttp.ClientSession() as http:  # what the gateway exports after it all
            metrics = await save_metrics(http, [f"{pipe.gateway}/metrics"], tmp_path / "metrics")
    finally:
        for producer in producers.values():
            await producer.drain()
        await pipe.stop_all()
        await nc.drain()

    everything = outcomes + burst_outcomes
    live_problems = [p for s in streams for p in live.problems(s, partials, finals)]
    ends = [f.injected for f in run.faults[1:]] + [float("inf")]
    records = []
    for fault, end in zip(run.faults, ends, strict=True):
        mine = [s for s in streams if hit_by(s, run.faults) is fault]
        ids = set().union(*(s.utterance_ids for s in mine)) if mine else set()
        live_counts = {
            "live_streams": len(mine), "live_utterances": len(ids),
            "live_partials_replayed": sum(live.replayed_partials(s, partials) for s in mine),
            "lost": sum(1 for u in ids if not rows["answers"].get(u)
                        or not rows["transcripts"].get(u)),
            "duplicated": sum(1 for u in ids if rows["answers"].get(u, 0) > 1
                              or rows["transcripts"].get(u, 0) > 1),
        } if mine else {}
        record = {"benchmark": f"chaos-{fault.scenario}",
                  "when": datetime.now(UTC).isoformat(timespec="seconds"),
                  **window_record(fault, end, everything, acked, rows, letters,
                                  live_counts)}
        if mine:
            record["live_problems"] = [p for s in mine for p in live.problems(s, partials, finals)]
            record["result"] = "fail" if record["live_problems"] else record["result"]
        records.append(record)
    with results_lock():
        for record in records:
            write_result(RESULTS / f"{record['benchmark']}.json", record)
        regenerate_report()
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
    # no secret and no word of the run in any process's log, the gateway's /metrics or
    # an error body a client got, through all the faults
    said = [text for o in everything for text in (o.answer, o.transcript) if text]
    said += [f.text for f in finals]
    refusals = tmp_path / "refusals.txt"  # every error body a client was sent
    refusals.write_text("\n".join(body for o in everything for *_, body in o.refusals))
    findings = scan([pipe.logs, chaos_nats.server.data_dir / "nats-server.log", *metrics,
                     refusals],
                    run_secrets(pipe, chaos_pg, chaos_nats), distinctive(words_of(*said)))
    assert [str(f) for f in findings] == []
    slow = records[-1]
    # the gateway refused with 503 + Retry-After naming reason's lag: its own lag check
    # saw it over LAG_THRESHOLD (the test's half-second samples, in peak_lag, may miss
    # the peak: one run sampled 8 while the gateway refused at over 40)
    assert slow["refused_503_with_retry_after"] > 0
