"""The deployment NATS configs run for real on loopback (ports and paths rewritten, the
TLS files from a throw-away CA): one node serves JetStream over TLS, and three nodes form a
cluster over mutually authenticated TLS routes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mumu.broker.connect import NatsUnreachable, connect
from mumu.broker.embedded import nats_server_binary
from mumu.broker.settings import NatsSettings, NatsTlsSettings
from tests.test_deploy_files import ROOT, with_test_certs
from tests.tls_certs import Pki

pytestmark = pytest.mark.timeout(120)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@contextlib.asynccontextmanager
async def running(conf: Path, port: int) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        str(nats_server_binary()), "-c", str(conf),
        stdout=asyncio.subprocess.DEVNULL, stderr=(conf.parent / "server.log").open("ab"),
        env={**os.environ, "NATS_JS_KEY": "test-key"},
    )
    try:
        async with asyncio.timeout(10):
            while True:
                assert proc.returncode is None, (conf.parent / "server.log").read_text()
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
        yield
    finally:
        proc.terminate()
        await proc.wait()


def rewritten(conf: Path, pki: Pki, tmp_path: Path, client: int, http: int) -> Path:
    copy = with_test_certs(conf, pki, tmp_path)
    text = copy.read_text()
    text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
    text = text.replace("http: 127.0.0.1:8222", f"http: 127.0.0.1:{http}")
    text = re.sub(r"store_dir: \S+", f'store_dir: "{tmp_path / "store"}"', text)
    copy.write_text(text)
    return copy


def tls_client(url: str, pki: Pki, conf: Path) -> NatsSettings:
    """The operator's view of a node: TLS and the credentials of its users."""
    return NatsSettings(url=url, connect_timeout=2.0, tls=NatsTlsSettings(ca_file=pki.ca),
                        credentials=conf.parent / "auth" / "creds")


async def test_the_single_node_config_serves_jetstream_over_tls_only(
    pki: Pki, tmp_path: Path
) -> None:
    client, http = free_ports(2)
    conf = rewritten(ROOT / "infra" / "nats" / "nats-single.conf", pki, tmp_path, client, http)
    async with running(conf, client):
        with pytest.raises(NatsUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            await connect(NatsSettings(url=f"tls://127.0.0.1:{client}", connect_timeout=2.0),
                          name="no-ca")
        with pytest.raises(NatsUnreachable, match="Authorization Violation"):
            await connect(NatsSettings(url=f"nats://127.0.0.1:{client}", connect_timeout=2.0,
                                       tls=NatsTlsSettings(ca_file=pki.ca)), name="anonymous")
        nc = await connect(tls_client(f"nats://127.0.0.1:{client}", pki, conf), name="deploy")
        try:
            info = await nc.jetstream().add_stream(name="T", subjects=["t.>"])
            assert info.config.name == "T"
        finally:
            await nc.close()
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{http}/varz"
        ) as resp:
            varz = await resp.json()
    assert varz["tls_required"] is True
    assert varz["http_host"] == "127.0.0.1"


def cluster(pkis: list[Pki], tmp_path: Path) -> tuple[list[Path], list[int], list[int]]:
    """The three node configs on loopback (node n with the files of ``pkis[n - 1]``, all
    trusting the first CA); their client and monitoring ports."""
    ports = free_ports(9)
    clients, https, routes = ports[0:3], ports[3:6], ports[6:9]
    names = {f"nats-route://nats-{n}:6222": f"nats-route://127.0.0.1:{routes[n - 1]}"
             for n in (1, 2, 3)}
    confs = []
    for n in (1, 2, 3):
        node = tmp_path / f"n{n}"
        node.mkdir()
        if n > 1:  # every node of a cluster includes the same users
            shutil.copytree(tmp_path / "n1" / "auth", node / "auth")
        conf = rewritten(ROOT / "infra" / "nats" / f"nats-{n}.conf", pkis[n - 1], node,
                         clients[n - 1], https[n - 1])
        (node / "tls" / "ca.pem").write_bytes(pkis[0].ca.read_bytes())
        text = conf.read_text().replace("listen: 0.0.0.0:6222",
                                        f"listen: 127.0.0.1:{routes[n - 1]}")
        for old, new in names.items():
            text = text.replace(old, new)
        conf.write_text(text)
        confs.append(conf)
    return confs, clients, https


async def test_a_node_without_a_certificate_of_the_cluster_ca_cannot_join(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    confs, clients, _ = cluster([pki, pki, other_pki], tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        for conf, port in zip(confs, clients, strict=True):
            await stack.enter_async_context(running(conf, port))
        log = confs[0].parent / "server.log"
        async with asyncio.timeout(30):
            while "TLS route handshake error" not in log.read_text():
                await asyncio.sleep(0.2)
    # a Go TLS client offers no certificate the server's CA list does not name
    assert re.search(r"TLS route handshake error: .*(didn't provide a certificate|bad "
                     r"certificate|unknown authority)", log.read_text())


async def test_three_nodes_form_a_cluster_over_mutual_tls_routes(
    pki: Pki, tmp_path: Path
) -> None:
    confs, clients, https = cluster([pki, pki, pki], tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        for conf, port in zip(confs, clients, strict=True):
            await stack.enter_async_context(running(conf, port))
        nc = await connect(tls_client(f"tls://127.0.0.1:{clients[0]}", pki, confs[0]),
                           name="deploy")
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        # an R3 stream needs all three nodes: it exists only once the routes are up
        async with asyncio.timeout(60):
            while True:
                try:
                    await js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
                    break
                except Exception:  # noqa: BLE001 - no meta leader / peers yet
                    await asyncio.sleep(0.5)
        ack = await js.publish("r3.x", b"replicated")
        assert ack.stream == "R3"
        info = await js.stream_info("R3")
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # the leader and two replicas
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{https[0]}/routez"
        ) as resp:
            routez = await resp.json()
    assert routez["num_routes"] >= 2
