"""What `mumu bench live` runs: a broker with users, a gateway process, the stages
(``live_run``) and the driver that measures through them (``running``).

The broker is the embedded nats-server with every user `mumu up` creates (an nkey user per
service role, the operator, the system user) and one producer of the benchmark's workspace:
no anonymous connection. The stages connect as their roles, the gateway as ``gateway``,
the benchmark's set-up as the operator and the NATS driver as the workspace's producer.

The gateway is ``mumu gateway`` in a child process (its event loop is not the stages' nor
the clients'), with a session secret the benchmark signs tokens with, as
``mumu bench gateway`` does; it has no database, so its tokens need no API key, and no
quotas (the stages run without them: this measures speech, not admission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mumu.bench.live_driver import LiveDriver, NatsLiveDriver, OnEvent
from mumu.bench.live_run import Live, pipeline
from mumu.bench.live_ws import WsLiveDriver
from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.settings import NatsSettings
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts.subjects import producer_inbox_prefix
from mumu.gateway.tokens import TokenSigner
from mumu.stages.registry import STAGES

DRIVERS = ("websocket", "nats")
"""``--driver``: the gateway's websocket (and ``POST /api/ask``), or the producer subjects."""


@dataclass(frozen=True)
class Broker:
    server: EmbeddedNats
    nats: NatsSettings
    """URL and the directory of role seeds (each process picks its own)."""
    producer_seed: Path


@contextlib.asynccontextmanager
async def broker(tmp: Path, workspace: str) -> AsyncIterator[Broker]:
    users = AuthDir(tmp / "auth")
    users.ensure_services()
    users.add_workspaces([workspace])
    producer_seed = tmp / "producer.nk"
    write_secret(producer_seed, users.issue_producer(workspace))
    users.render(STAGES.consumers())
    async with EmbeddedNats(tmp / "nats", auth_file=users.auth_conf) as server:
        yield Broker(server, NatsSettings(url=server.url, credentials=users.creds),
                     producer_seed)


@dataclass
class Gateway:
    """A ``mumu gateway`` process: spawned, then ``await started()`` for its URL (so it
    starts while the stages load the model). Its log (stderr) goes to ``log``."""

    proc: asyncio.subprocess.Process
    signer: TokenSigner
    log: Path
    url: str = ""

    async def started(self) -> str:
        if not self.url:
            if self.proc.stdout is None:
                raise RuntimeError("the gateway's output is not read")
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().strip()
            if ": " not in line:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the gateway did not start: {line!r}; its log: {tail}")
            self.url = line.split(": ", 1)[1]
        return self.url


@contextlib.asynccontextmanager
async def gateway(on: Broker, max_streams: int, log: Path) -> AsyncIterator[Gateway]:
    """``mumu gateway`` on the broker (its streams applied: it reads ``MUMU_RESULTS``)."""
    secret = secrets.token_hex(16)
    places = str(max(8, max_streams + 2))  # the capacity streams hold one each
    env = {"MUMU_NATS__URL": on.server.url, "MUMU_NATS__CREDENTIALS": str(on.nats.credentials),
           "MUMU_GATEWAY__SESSION_SECRET": secret, "MUMU_GATEWAY__HOST": "127.0.0.1",
           "MUMU_GATEWAY__PORT": "0", "MUMU_LOG_LEVEL": "WARNING",
           "MUMU_QUOTA__ENABLED": "false",
           "MUMU_GATEWAY__MAX_AUDIO_BUFFERS": places,
           "MUMU_GATEWAY__MAX_AUDIO_BUFFERS_PER_WORKSPACE": places}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mumu", "gateway", env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE, stderr=stderr)
    try:
        yield Gateway(proc, TokenSigner(SecretStr(secret), 86_400.0), log)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


@contextlib.asynccontextmanager
async def driver(on: Broker, workspace: str, on_event: OnEvent, gw: Gateway | None
                 ) -> AsyncIterator[LiveDriver]:
    """A driver, started: through ``gw`` (websocket), or as the producer without (nats)."""
    if gw is None:
        nc = await nats.connect(on.server.url, nkeys_seed=str(on.producer_seed),
                                inbox_prefix=producer_inbox_prefix(workspace))
        nats_driver = NatsLiveDriver(nc, workspace, on_event)
        try:
            await nats_driver.start()
            yield nats_driver
        finally:
            await nats_driver.close()
            await nc.drain()
        return
    url = await gw.started()
    async with aiohttp.ClientSession() as http:
        ws_driver = WsLiveDriver(http, url, lambda session: gw.signer.issue(workspace, session)[0],
                                 on_event)
        try:
            yield ws_driver
        finally:
            await ws_driver.close()


@dataclass(frozen=True)
class Running:
    """Everything a run measures with, up."""

    way_in: LiveDriver
    live: Live
    gateway: Gateway | None

    async def counts(self) -> dict[str, Any]:
        """What the way in counted: frames sent and the gateway's counts (websocket)."""
        if not isinstance(self.way_in, WsLiveDriver) or self.gateway is None:
            return {}
        return {"frames_sent": self.way_in.frames_sent,
                "gateway": await gateway_counts(self.gateway.url)}


@contextlib.asynccontextmanager
async def running(tmp: Path, args: argparse.Namespace, workspace: str, on_event: OnEvent
                  ) -> AsyncIterator[Running]:
    """The broker, its streams and the workspace; the gateway (``--driver websocket``,
    started while the stages load the model), the stages, and the driver."""
    async with broker(tmp, workspace) as on, contextlib.AsyncExitStack() as stack:
        nc = await connect(on.nats, name="mumu-bench-live")  # the operator
        try:
            await apply_all(nc)
            await ensure_workspace(nc, workspace)
        finally:
            await nc.drain()
        gw = (await stack.enter_async_context(
            gateway(on, args.max_streams, tmp / "gateway.log"))
            if args.driver == "websocket" else None)
        live = await stack.enter_async_context(pipeline(on.nats, tmp, args))
        way_in = await stack.enter_async_context(driver(on, workspace, on_event, gw))
        yield Running(way_in, live, gw)


async def gateway_counts(url: str) -> dict[str, Any]:
    """What the gateway counted (its ``/metrics``): asks by kind, results sent to
    websockets by type, NATS permission violations."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, dict[str, float]] = {"asks": {}, "events_sent": {}}
    violations = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mumu_gateway_asks_total":
                out["asks"][sample.labels["kind"]] = sample.value
            elif sample.name == "mumu_gateway_events_sent_total":
                out["events_sent"][sample.labels["type"]] = sample.value
            elif sample.name == "mumu_nats_permission_violations_total":
                violations += sample.value
    return {**out, "permission_violations": violations}
