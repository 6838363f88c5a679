"""Live streams against the workspace's quotas, end to end (real nats-server, PostgreSQL,
gateway, ingest and transcribe with the real model; reason with an instant backend): a
stream is admitted at ``stream.start`` as an ask (one of the asks per minute, a slot in
flight), holds its slot until the transcribe stage's ``stream.ended``, and each utterance
after the first takes one more ask at reason. Past a limit the client gets
``quota_exceeded`` with ``retry_after`` over the socket, and the socket goes on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.conftest import Ensure
from tests.gateway.conftest import Gateway, serving
from tests.gateway.pipeline import pipeline_settings
from tests.gateway.quota_kit import FastBackend, quota_settings, reason_stage
from tests.harness import running
from tests.live.ws_live import Reader, clip, noise, pcm16, send_paced
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def three_utterances() -> np.ndarray:
    return np.concatenate([noise(0.5), clip("en01.wav"), noise(1.5, 6), clip("en02.wav"),
                           noise(1.5, 7), clip("en03.wav"), noise(1.0, 8)])


async def socket(http: aiohttp.ClientSession, gw: Gateway, ws_id: str, session: str
                 ) -> tuple[aiohttp.ClientWebSocketResponse, Reader]:
    ws = await http.ws_connect(gw.ws_url(await gw.key_token(ws_id, session)))
    reader = await Reader(ws).__aenter__()
    await reader.wait(lambda _: reader.of_type("ready"))
    return ws, reader


async def start(ws: aiohttp.ClientWebSocketResponse, reader: Reader) -> dict[str, Any]:
    """``stream.start``: its ``stream.started``, or the error that refused it."""
    before = len(reader.messages)
    await ws.send_json({"type": "stream.start", "format": "pcm16", "language": "en"})
    got = await reader.wait(lambda ms: any(m["type"] in ("stream.started", "error")
                                           for m in ms[before:]), 20)
    return next(m for m in got[before:] if m["type"] in ("stream.started", "error"))


async def test_live_streams_take_asks_and_hold_a_slot_until_the_stage_ends_them(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, workspaces: Ensure, admin_conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    cfg = quota_settings(pipeline_settings(settings, tmp_path.parent / "models"), pg_settings)
    ws_id, _ = await workspace("live-quota")
    await workspaces(ws_id)
    await set_limit_overrides(admin_conn, ws_id, {"asks_per_minute": 2,
                                                  "concurrent_requests": 1})
    async with running(build_ingest(cfg), cfg), running(build_transcribe(cfg), cfg), \
            running(reason_stage(cfg, FastBackend()), cfg), serving(cfg) as gw, \
            aiohttp.ClientSession() as http:
        a, a_reader = await socket(http, gw, ws_id, "a")
        b, b_reader = await socket(http, gw, ws_id, "b")
        # a's stream is admitted: the first of 2 asks this minute, the 1 slot in flight
        started = await start(a, a_reader)
        assert started["type"] == "stream.started", started
        rid, sid = started["request_id"], started["stream_id"]
        # b meets the slot a holds: a 429's error, and its socket goes on
        busy = await start(b, b_reader)
        assert busy["code"] == "quota_exceeded" and "in flight" in busy["message"], busy
        assert 1 <= busy["retry_after"] <= 5
        await b.send_json({"type": "ping"})
        await b_reader.wait(lambda _: b_reader.of_type("pong"))

        # three utterances: the second takes the other ask, the third finds none left
        await send_paced(a, pcm16(three_utterances()), pace=2.0)
        await a.send_json({"type": "stream.end"})
        # stream.ended is transcribe's (after the last final); the answers and reason's
        # error for the third utterance come from reason, in their own time
        await a_reader.wait(lambda _: a_reader.of_type("stream.ended") and len(
            a_reader.of_type("answer.final") + a_reader.of_type("error")) >= 3, 120)
        msgs = a_reader.messages
        finals = [m["request_id"] for m in msgs if m["type"] == "transcript.final"]
        answers = sorted(m["request_id"] for m in msgs if m["type"] == "answer.final")
        errors = [m for m in msgs if m["type"] == "error"]
        assert finals == [f"{rid}-0", f"{rid}-1", f"{rid}-2"]
        assert answers == [f"{rid}-0", f"{rid}-1"]
        assert [(e["request_id"], e["code"], e["stage"]) for e in errors] == [
            (f"{rid}-2", "quota_exceeded", "reason")]
        assert "2 per minute" in errors[0]["message"]
        assert "retry after" in errors[0]["message"]
        [ended] = a_reader.of_type("stream.ended")
        assert (ended["stream_id"], ended["utterances"]) == (sid, 3)

        # the stage's stream.ended freed a's slot (ingest frees it): b is now refused
        # for the asks per minute, no longer for a slot in flight
        deadline = time.monotonic() + 30
        while "in flight" in (refused := await start(b, b_reader))["message"]:
            assert time.monotonic() < deadline, "the stream's slot was never freed"
            await asyncio.sleep(0.5)
        assert refused["code"] == "quota_exceeded" and "2 per minute" in refused["message"]
        assert 1 <= refused["retry_after"] <= 30
        await b.send_json({"type": "ping"})
        await b_reader.wait(lambda _: len(b_reader.of_type("pong")) == 2)
        for ws, reader in ((a, a_reader), (b, b_reader)):
            await reader.__aexit__()
            await ws.close()
