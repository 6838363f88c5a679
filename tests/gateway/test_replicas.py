"""Two gateway processes: a request made through one streams to a websocket on the other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts.event_types import EventType
from mumu.settings import Settings
from mumu.stages.reason.stage import build_stage as build_reason
from tests.conftest import nats_env
from tests.gateway.conftest import SECRET, WS_A, gateway_settings, receive_until, serving
from tests.gateway.pipeline import pipeline_settings
from tests.harness import running


@contextlib.asynccontextmanager
async def gateway_process(server: EmbeddedNats) -> AsyncIterator[str]:
    """``mumu gateway`` as a child process; yields its base URL."""
    env = {**os.environ, **nats_env(server), "MUMU_GATEWAY__SESSION_SECRET": SECRET,
           "MUMU_GATEWAY__PORT": "0", "MUMU_LOG_LEVEL": "WARNING"}
    env.pop("MUMU_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "gateway", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("gateway: "), line
        yield line.split(" ", 1)[1].strip()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_ask_on_one_gateway_streams_on_the_other(
    nc: NATS, streams: None, settings: Settings, nats_server: EmbeddedNats, model_cache: Path
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache))
    async with running(build_reason(cfg), cfg), serving(cfg) as here, gateway_process(
        nats_server
    ) as there, aiohttp.ClientSession() as http:
        token = here.token(WS_A, "shared")  # same secret: either replica accepts it
        async with http.ws_connect(here.ws_url(token)) as ws:
            await receive_until(ws, lambda m: m["type"] == "ready")
            async with http.post(f"{there}/api/ask", json={"text": "What colour is grass?"},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 202
                request_id = (await resp.json())["request_id"]
            got = await receive_until(ws, lambda m: m["type"] == EventType.ANSWER_FINAL, timeout=60)
        async with http.ws_connect(f"{there.replace('http', 'ws')}/api/ws?token={token}") as ws2:
            await receive_until(ws2, lambda m: m["type"] == "ready")
            await ws2.send_json({"type": "resume", "after": 0})
            replayed = await receive_until(ws2, lambda m: m["type"] == "resumed")
    mine = [m for m in got if m.get("request_id") == request_id]
    assert [m["type"] for m in mine][-1] == EventType.ANSWER_FINAL
    assert {m["type"] for m in mine[:-1]} == {EventType.ANSWER_DELTA}
    assert [m["cursor"] for m in replayed if m.get("request_id") == request_id] == [
        m["cursor"] for m in mine]
