"""Buckets follow ``--replicas`` like streams do, on a real 3-node JetStream cluster.

A deployment made at R1 and moved to R3 in place (``mumu streams apply --replicas 3``)
used to keep every KV and Object Store bucket at R1, each on one node: with that node
down, the gateway's quota check, reason's session and idempotency records and ingest's
audio writes all waited for it, and no answer came until it was back (``docs/ops.md``,
"The cluster"). Here the buckets move to R3 with the streams, and a bucket keeps taking
writes while the node that led it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from mumu.broker.cluster import EmbeddedCluster, wait_for_jetstream
from mumu.broker.credentials import AuthDir
from mumu.broker.streams import apply_all, load_bucket_configs
from mumu.broker.workspaces import ensure_workspaces, own_streams
from tests.conftest import operator_connection

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

WS = "ws-rescale"
ELECTION_BUDGET = 10.0
"""Seconds a bucket may refuse writes after its leader's node is killed (an election
takes about 2-6 s on loopback)."""


def bucket_streams() -> list[str]:
    """The streams under every shipped bucket and the workspace's buckets."""
    shipped = load_bucket_configs()
    return [
        *(f"OBJ_{b['bucket']}" for b in shipped["object_stores"]),
        *(f"KV_{b['bucket']}" for b in shipped["key_value"]),
        *own_streams(WS)[1:],  # its buckets (the first is its intake stream)
    ]


async def placement(nc: NATS, stream: str) -> tuple[int, int, str]:
    """The configured replicas, the peers placed and current, and the leader ("" while
    none is elected)."""
    info = await nc.jetstream().stream_info(stream)
    assert info.cluster is not None, stream
    current = 1 + sum(1 for r in info.cluster.replicas or [] if r.current and not r.offline)
    return info.config.num_replicas or 0, current, info.cluster.leader or ""


async def placed(nc: NATS, streams: list[str], count: int, timeout: float = 30.0) -> None:
    """Until every stream of ``streams`` has ``count`` replicas, all current, and a leader
    (the meta leader places new peers, they catch up, the stream elects)."""
    async with asyncio.timeout(timeout):
        while True:
            seen = [await placement(nc, s) for s in streams]
            if all(r == p == count and leader for r, p, leader in seen):
                return
            await asyncio.sleep(0.2)


async def put_until_taken(kv: KeyValue, timeout: float) -> float:
    """Seconds until a write to ``kv`` is acknowledged (each try bounded)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
                await asyncio.wait_for(kv.put("probe", b"1"), 2.0)
                return time.monotonic() - started
            await asyncio.sleep(0.2)


async def test_buckets_move_to_r3_with_the_streams_and_outlive_their_leader(
    tmp_path: Path, broker_users: AuthDir,
) -> None:
    async with EmbeddedCluster(tmp_path / "cluster", 3,
                               auth_file=broker_users.auth_conf) as cluster:
        nc = await operator_connection(cluster.url.split(","), broker_users)
        try:
            await wait_for_jetstream(nc)
            await apply_all(nc, replicas=1)
            await ensure_workspaces(nc, [WS], replicas=1)
            streams = bucket_streams()
            await placed(nc, streams, 1)

            drift = await apply_all(nc, dry_run=True, replicas=3)
            shipped = set(streams) - set(own_streams(WS))  # the workspace's: not apply_all's
            assert {c.name for c in drift if "num_replicas" in c.diff} >= shipped
            await apply_all(nc, replicas=3)
            await ensure_workspaces(nc, [WS], replicas=3)
            await placed(nc, streams, 3)

            quota = "mumu-quota"
            kv = await nc.jetstream().key_value(quota)
            _, _, leader = await placement(nc, f"KV_{quota}")
            await cluster.node(leader).kill()
            took = await put_until_taken(kv, ELECTION_BUDGET + 5)
            assert took < ELECTION_BUDGET, f"{quota} refused writes for {took:.1f} s"
            _, _, new_leader = await placement(nc, f"KV_{quota}")
            assert new_leader != leader
        finally:
            await nc.drain()
