"""`mumu up --cluster 3`: three embedded nats-server nodes as a JetStream cluster on
loopback, every stream at R3, the pipeline answering on it, everything stopped on Ctrl-C."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import nats
import pytest

from mumu.broker import cluster as cluster_module
from mumu.broker.cluster import EmbeddedCluster
from mumu.contracts import subjects
from tests.test_up import ask, log_tail, start_up, stop_up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_up_cluster_3_runs_the_pipeline_on_three_nodes_at_r3(tmp_path: Path) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, _ = await start_up(data_dir, {"MUMU_NATS__EMBEDDED_CLUSTER": "3"})
    try:
        urls = lines["nats"].split(",")
        assert len(urls) == 3 and all(u.startswith("nats://127.0.0.1:") for u in urls), lines
        seed = lines["operator credentials"].split()[0]  # absolute: MUMU_DATA_DIR is
        nc = await nats.connect(urls, nkeys_seed=seed, inbox_prefix="_MUMU_INBOX.operator")
        try:
            js = nc.jetstream()
            for stream in (subjects.STREAM_INGEST, subjects.STREAM_RESULTS,
                           subjects.intake_stream(lines["workspace"])):
                info = await js.stream_info(stream)
                assert info.config.num_replicas == 3, stream
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        finally:
            await nc.drain()
        result = await ask(lines["gateway"], lines["api key"], "What is the capital of France?")
        assert "paris" in str(result["answer"]).lower(), result
        # the routes are authenticated: a node that does not know the secret cannot join
        conf = (data_dir / "nats" / "nats-1" / "nats-server.conf").read_text()
        assert "authorization" in conf.split("cluster {", 1)[1]
        assert (data_dir / "nats" / "route-secret").stat().st_mode & 0o777 == 0o600
    finally:
        assert await stop_up(proc) == 0, log_tail(data_dir)
    await asyncio.sleep(0.5)
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    out, _ = await ps.communicate()
    assert str(data_dir / "nats") not in out.decode(), "every node stopped"


def test_the_cli_flag_sets_the_cluster_size() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "mumu", "up", "--cluster", "9"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and "--cluster takes 1 to 5 nodes" in out.stderr + out.stdout


def test_every_port_of_a_cluster_is_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Route and client ports are picked in one go: the kernel may hand a port it gave
    out a moment ago out again (simulated here: every pick starts at the same port), and
    a CI run once had a node with one port for its clients and its routes, which then
    could not listen."""
    monkeypatch.setattr(cluster_module, "free_ports", lambda count: list(range(40000, 40000 + count)))
    cluster = EmbeddedCluster(tmp_path / "cluster", 3)
    ports = [p for node in cluster.nodes.values() for p in (
        node.requested_port, node.cluster.route_port if node.cluster else 0)]
    assert sorted(ports) == list(range(40000, 40006)), ports
