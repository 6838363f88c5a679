"""A JetStream cluster of embedded ``nats-server`` nodes on loopback (``mumu up --cluster
3``, and the failover tests): the same servers as one embedded node, plus routes between
them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.broker.embedded import ClusterMembership, EmbeddedNats

log = logging.getLogger(__name__)

CLUSTER_NAME = "mumu"
ROUTE_USER = "mumu-route"
ROUTE_SECRET_FILE = "route-secret"  # noqa: S105 - a file name


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback right now."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _route_secret(data_dir: Path) -> SecretStr:
    """The routes' shared password: made once, kept (mode 0600) so restarts rejoin."""
    path = data_dir / ROUTE_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return SecretStr(path.read_text().strip())


class EmbeddedCluster:
    """``size`` nodes named ``nats-1`` … in ``data_dir/nats-N``; ``node_options`` go to
    every node (users, at-rest cipher and key, TLS, payload limit).

    Ports are picked when the cluster is made and kept across restarts of a node, so a
    killed node comes back where its peers and clients look for it.
    """

    def __init__(self, data_dir: Path, size: int = 3, **node_options: Any) -> None:
        if size < 2:
            raise ValueError("a cluster has at least two nodes (three for a quorum)")
        self.data_dir = data_dir
        # one call: ports picked by two calls can coincide (the first call's sockets are
        # closed, and the kernel may hand a port out again), and a node then cannot listen
        ports = free_ports(2 * size)
        route_ports, client_ports = ports[:size], ports[size:]
        password = _route_secret(data_dir)
        self.nodes: dict[str, EmbeddedNats] = {}
        for index in range(size):
            name = f"nats-{index + 1}"
            membership = ClusterMembership(
                server_name=name, cluster_name=CLUSTER_NAME, route_port=route_ports[index],
                route_ports=tuple(route_ports), route_user=ROUTE_USER, route_password=password,
            )
            self.nodes[name] = EmbeddedNats(
                data_dir / name, port=client_ports[index], cluster=membership, **node_options
            )

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what ``MUMU_NATS__URL`` takes)."""
        return ",".join(node.url for node in self.nodes.values())

    @property
    def tls(self) -> bool:
        return any(node.tls is not None for node in self.nodes.values())

    def node(self, server_name: str) -> EmbeddedNats:
        return self.nodes[server_name]

    async def start(self, timeout: float = 30.0) -> None:
        """Start every node at once (a JetStream cluster needs a quorum to elect its meta
        leader); stop those that started when one fails."""
        results = await asyncio.gather(
            *(node.start(timeout) for node in self.nodes.values()), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]
        log.info("nats cluster %s: %s", CLUSTER_NAME, ", ".join(
            f"{name} on {node.url}" for name, node in self.nodes.items()))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))

    async def __aenter__(self) -> EmbeddedCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def wait_for_jetstream(nc: NATS, timeout: float = 30.0) -> None:
    """Until the cluster's JetStream answers (its meta leader is elected): the first
    stream created before that fails with "JetStream system temporarily unavailable"."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.account_info()
                return
            await asyncio.sleep(0.2)
