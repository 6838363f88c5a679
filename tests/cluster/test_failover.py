"""The real pipeline on a 3-node JetStream cluster (three nats-server processes from the
wheel, on loopback): every stage and the gateway run by `mumu up` against it, 1,000 mixed
text and audio asks, and the leaders of MUMU_INGEST and MUMU_RESULTS killed (SIGKILL) and
restarted mid-load. Nothing JetStream acknowledged is lost, nothing is stored twice, every
client gets its final, and processing goes on while each killed node is down: asks made
after the stream's new leader was elected are answered before the node is back.

Before that, the same asks at R1 and at R3 measure what replication costs (one run, one
ratio: ``benchmarks/results/cluster.json``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo

from mumu.broker.cluster import EmbeddedCluster, wait_for_jetstream
from mumu.broker.credentials import AuthDir
from mumu.broker.intake import rescaled, reseat_sources
from mumu.broker.jsapi import stream_names
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspaces
from mumu.contracts import subjects
from mumu.stages.registry import STAGES
from tests.chaos.scenarios import dead_letters, regenerate_report, results_lock
from tests.conftest import DATA, operator_connection
from tests.loadgen import (
    Load,
    Tenant,
    acknowledged_requests,
    judge,
    stored_rows,
    wait_stored,
    write_result,
)
from tests.pg_fixtures import WorkspaceFactory
from tests.test_up import start_up, stop_up

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(1500)]

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "cluster.json"
"""Where a run records its counts with ``MUMU_RECORD_RESULTS=1`` (the README quotes that
file); any other run writes them into its temporary directory, so a test run never
changes what the README quotes."""
CHAOS = RESULTS.with_name("chaos-cluster-node.json")
"""The chaos report's counts (docs/reliability.md): written on every run."""
TOTAL = 1000
MEASURED = 40
"""Text asks per replication level in the R1/R3 comparison."""
DOWN_SECONDS = 45.0
"""How long each killed node stays down: about 39 s after the stream's new leader is
elected (some 6 s after the kill). The other raft groups (consumers, buckets) elect in
turn after it, and the intake streams' sourcing into MUMU_INGEST may wait out
nats-server's retry backoff (10 s, then 20 s): the longest silence after the election
measured 2.5-33.1 s (docs/ops.md "The cluster")."""
CLIPS = sorted((DATA / "load").glob("q*.wav"))


async def stream_info(nc: NATS, stream: str) -> StreamInfo | None:
    """The stream's info, or None while the cluster does not answer (an election, or this
    connection reconnecting from a killed node)."""
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        return await asyncio.wait_for(nc.jetstream().stream_info(stream), 3)
    return None


async def leader(nc: NATS, stream: str, other_than: str = "", timeout: float = 30.0) -> str:
    """The server leading ``stream`` (one other than ``other_than``), asked until the
    cluster answers: the test's own connection may be on the node just killed."""
    async with asyncio.timeout(timeout):
        while True:
            info = await stream_info(nc, stream)
            if info and info.cluster and info.cluster.leader not in (None, "", other_than):
                return info.cluster.leader
            await asyncio.sleep(0.2)


async def all_current(nc: NATS, streams: list[str], timeout: float = 60.0) -> None:
    """Until every replica of ``streams`` is current again (a restarted node caught up)."""
    async with asyncio.timeout(timeout):
        while True:
            infos = [await stream_info(nc, s) for s in streams]
            if all(i and i.cluster and i.cluster.leader and i.cluster.replicas
                   and all(r.current and not r.offline for r in i.cluster.replicas)
                   for i in infos):
                return
            await asyncio.sleep(0.5)


async def replicate(nc: NATS, workspaces: list[str], replicas: int) -> None:
    """Every stream and bucket, and the workspaces' intake streams and buckets, at
    ``replicas`` (a bucket left at R1 stops every ask while its one node is down)."""
    changes = await apply_all(nc, replicas=replicas)
    changes += await ensure_workspaces(nc, workspaces, replicas=replicas)
    assert rescaled(changes)
    await reseat_sources(nc)  # as `mumu streams apply --replicas 3` does
    for stream in await stream_names(nc):
        info = await nc.jetstream().stream_info(stream)
        assert info.config.num_replicas == replicas, stream


async def throughput(gateway: str, tenants: list[Tenant]) -> float:
    """Text asks answered per second (same clients, same asks)."""
    load = Load(gateway, tenants, CLIPS, total=MEASURED, clients=8, audio_every=0)
    started = time.monotonic()
    outcomes = await load.run()
    assert all(o.final for o in outcomes), [o.statuses for o in outcomes if not o.final]
    return MEASURED / (time.monotonic() - started)


async def kill_and_restart(cluster: EmbeddedCluster, nc: NATS, stream: str,
                           load: Load) -> dict[str, Any]:
    """SIGKILL the leader of ``stream``, leave it down, start it again; what happened."""
    name = await leader(nc, stream)
    killed_at = time.monotonic()
    await cluster.node(name).kill()
    new_leader = await leader(nc, stream, other_than=name)
    elected_at = time.monotonic()
    await asyncio.sleep(max(0.0, DOWN_SECONDS - (elected_at - killed_at)))
    await cluster.node(name).start()
    restarted_at = time.monotonic()
    answered = sorted(o.done_at for o in load.outcomes
                      if o.done_at is not None and killed_at <= o.done_at < restarted_at)
    asked_after_election = [o for o in load.outcomes if o.done_at is not None
                            and o.first_sent_at is not None and o.first_sent_at >= elected_at
                            and o.done_at < restarted_at]
    return {"stream": stream, "killed": name, "new_leader": new_leader,
            "seconds_to_new_leader": round(elected_at - killed_at, 1),
            "seconds_to_first_answer": round(answered[0] - killed_at, 1) if answered else None,
            "finals_while_down": len(answered),
            "asked_after_election_and_answered_while_down": len(asked_after_election),
            "longest_silence_after_election": round(
                longest_silence(answered, elected_at, restarted_at, load), 1),
            "down_seconds": round(restarted_at - killed_at, 1)}


def longest_silence(answered: list[float], start: float, end: float, load: Load) -> float:
    """The longest stretch of ``start``..``end`` without a final answer (``answered``:
    the finals' times, sorted); the stretch after the last ask's answer does not count."""
    if all(o.done_at is not None for o in load.outcomes):
        end = min(end, max(o.done_at for o in load.outcomes if o.done_at is not None))
    marks = [start, *(t for t in answered if start <= t < end), end]
    return max(b - a for a, b in itertools.pairwise(marks))


async def test_the_pipeline_on_a_3_node_cluster_loses_nothing_when_leaders_die(
    tmp_path: Path, broker_users: AuthDir, pg_admin_url: str, pg_app_url: str,
    master_keys: str, workspace: WorkspaceFactory,
) -> None:
    tenants = [Tenant(*await workspace("cluster-a")), Tenant(*await workspace("cluster-b"))]
    ids = [t.workspace for t in tenants]
    # the services' grants on these workspaces' buckets, as `mumu workspace create` gives
    broker_users.add_workspaces(ids)
    broker_users.render(STAGES.consumers())
    cluster = EmbeddedCluster(tmp_path / "cluster", 3, auth_file=broker_users.auth_conf)
    async with cluster:
        nc = await operator_connection(cluster.url.split(","), broker_users)
        await wait_for_jetstream(nc)
        proc, lines, _ = await start_up(tmp_path / "up" / ".mumu", {
            "MUMU_NATS__URL": cluster.url, "MUMU_NATS__CREDENTIALS": str(broker_users.creds),
            "MUMU_NATS__STREAM_REPLICAS": "1", "MUMU_DATABASE_URL": pg_app_url,
            "MUMU_DATABASE_ADMIN_URL": pg_admin_url, "MUMU_MASTER_KEYS": master_keys,
            # the product's own model, kept affordable by its settings (as the chaos run)
            "MUMU_REASON__MAX_TOKENS": "2", "MUMU_REASON__MAX_TURNS": "0",
            "MUMU_REASON__LLAMA_CPP__N_THREADS": "1", "MUMU_TRANSCRIBE__CPU_THREADS": "1",
            "MUMU_GATEWAY__RATE_LIMIT_PER_SECOND": "1000",
            "MUMU_GATEWAY__RATE_LIMIT_BURST": "1000",
        })
        try:
            gateway = lines["gateway"]
            # what replication costs: the same asks at R1, then at R3
            r1 = await throughput(gateway, tenants)
            await replicate(nc, ids, 3)
            await all_current(nc, await stream_names(nc))  # buckets too
            r3 = await throughput(gateway, tenants)

            load = Load(gateway, tenants, CLIPS, total=TOTAL, clients=8, audio_every=20)
            # (8: no more waiting asks per workspace than the gateway's cap lets wait)
            running = asyncio.create_task(load.run())
            faults = []
            for share, stream in ((0.25, subjects.STREAM_INGEST), (0.6, subjects.STREAM_RESULTS)):
                while load.finals_between(0, float("inf")) < share * TOTAL:
                    assert not running.done(), running
                    await asyncio.sleep(0.2)
                faults.append(await kill_and_restart(cluster, nc, stream, load))
                await all_current(nc, [stream])
            outcomes = await running
            elapsed = time.monotonic() - load.started
            acked = await acknowledged_requests(nc)
            asked = {o.request_id for o in outcomes}
            rows = await wait_stored(pg_admin_url, acked, timeout=120)
            letters = await dead_letters(nc)
        finally:
            assert await stop_up(proc) == 0
            await nc.drain()
    counts = judge(outcomes, acked, rows)
    record = os.environ.get("MUMU_RECORD_RESULTS") == "1"
    recorded = RESULTS if record else tmp_path / "cluster.json"
    write_result(recorded, {
        "benchmark": "cluster", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "nodes": 3, "requests": counts.as_json(),
        "audio_every": 20, "faults": faults, "load_seconds": round(elapsed, 1),
        "throughput_asks_per_s": {"r1": round(r1, 2), "r3": round(r3, 2),
                                  "r3_over_r1": round(r3 / r1, 3)},
    })
    chaos_record = {
        "benchmark": "chaos-cluster-node", "scenario": "cluster-node",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": {"text": sum(o.kind == "text" for o in outcomes),
                 "audio": sum(o.kind == "audio" for o in outcomes)},
        "faults": "3-node cluster: SIGKILL the leader of MUMU_INGEST, then of MUMU_RESULTS, "
                  f"each down {DOWN_SECONDS:.0f} s and restarted",
        "sent": counts.sent, "accepted": counts.accepted, "acknowledged": counts.acknowledged,
        "counts_note": f"acknowledged and persisted include the {2 * MEASURED} text asks of the "
                       "R1/R3 comparison made before the load",
        "persisted": counts.persisted, "duplicated": counts.duplicated, "lost": counts.lost,
        "dead_lettered": sum(letters.values()), "client_errors": counts.errors_to_clients,
        "finals_to_clients": counts.finals_to_clients,
        # to a new leader: the stream serves again (first answers: `node_faults`)
        "recovery_seconds": max(float(str(f["seconds_to_new_leader"])) for f in faults),
        "window_seconds": round(elapsed, 1), "statuses": counts.statuses, "node_faults": faults,
        "result": "pass" if counts.lost == counts.duplicated == counts.errors_to_clients == 0
                  and not letters else "fail",
    }
    with results_lock():  # the chaos run may write its files on the other worker
        write_result(CHAOS, chaos_record)
        regenerate_report()
    rows_now = await stored_rows(pg_admin_url)
    assert counts.sent == TOTAL
    assert counts.lost == 0, counts
    assert counts.duplicated == 0, counts
    assert acked.ids >= asked, "every ask was acknowledged by JetStream"
    assert all(n == 1 for n in acked.counts.values()), "JetStream deduplicated every retry"
    assert counts.finals_to_clients == TOTAL, [o for o in outcomes if not o.final][:5]
    assert all(rows_now["answers"][rid] == 1 for rid in asked)
    assert all(rows_now["transcripts"][rid] == 1 for rid in asked - acked.text)
    assert not acked.text & set(rows_now["transcripts"]), "a text ask has no transcript row"
    for fault in faults:
        assert fault["new_leader"] != fault["killed"]
        # processing goes on while each killed node is down: finals keep coming
        assert fault["finals_while_down"] > 0, faults
    # ... and new work goes through the new leaders: asks made after an election were
    # answered before its node came back (docs/ops.md, "The cluster"). Required of one
    # of the two faults: new asks reach MUMU_INGEST by sourcing from the intake streams,
    # and a source that failed to set up during the election waits out nats-server's
    # retry backoff (10 s, then 20 s: silences of 17-33 s measured), late, not lost
    assert any(f["asked_after_election_and_answered_while_down"] > 0 for f in faults), faults
