"""A websocket live stream's slot in flight at the gateway (real nats-server, PostgreSQL,
gateway; no stage runs, so no stream here is ever over): while its audio flows the stream
keeps its slot past ``MUMU_QUOTA__INFLIGHT_TIMEOUT`` (the gateway renews it), and once its
audio stops and nothing ends it, the slot ages out like any request whose end was lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NATS

from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from tests.conftest import Ensure
from tests.gateway.conftest import serving
from tests.gateway.quota_kit import quota_settings
from tests.live.ws_live import Reader
from tests.pg_fixtures import WorkspaceFactory

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 1.0
"""``inflight_timeout`` here: the gateway renews a running stream's slot every 0.33 s."""


async def start(ws: aiohttp.ClientWebSocketResponse, reader: Reader) -> dict[str, Any]:
    before = len(reader.messages)
    await ws.send_json({"type": "stream.start", "format": "pcm16"})
    got = await reader.wait(lambda ms: any(m["type"] in ("stream.started", "error")
                                           for m in ms[before:]), 10)
    return next(m for m in got[before:] if m["type"] in ("stream.started", "error"))


async def test_a_running_stream_keeps_its_slot_past_the_in_flight_timeout(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, workspaces: Ensure, admin_conn: asyncpg.Connection,
) -> None:
    cfg = quota_settings(settings, pg_settings, inflight_timeout=TIMEOUT)
    ws_id, _ = await workspace("live-slot")
    await workspaces(ws_id)
    await set_limit_overrides(admin_conn, ws_id, {"concurrent_requests": 1})
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        a = await http.ws_connect(gw.ws_url(await gw.key_token(ws_id, "a")))
        b = await http.ws_connect(gw.ws_url(await gw.key_token(ws_id, "b")))
        async with Reader(a) as a_reader, Reader(b) as b_reader:
            await a_reader.wait(lambda _: a_reader.of_type("ready"))
            await b_reader.wait(lambda _: b_reader.of_type("ready"))
            assert (await start(a, a_reader))["type"] == "stream.started"
            began = time.monotonic()
            while time.monotonic() - began < 3 * TIMEOUT:  # 100 ms frames of silence
                await a.send_bytes(b"\0\0" * 1600)
                await asyncio.sleep(0.1)
            refused = await start(b, b_reader)
            assert refused["type"] == "error", "a's slot expired while its audio flowed"
            assert refused["code"] == "quota_exceeded" and "in flight" in refused["message"]
            # a's audio stops and no stage ends its stream: the slot ages out
            await asyncio.sleep(TIMEOUT + 0.2)
            assert (await start(b, b_reader))["type"] == "stream.started"
        await a.close()
        await b.close()
