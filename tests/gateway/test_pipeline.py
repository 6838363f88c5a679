"""End to end with the real stages: websocket asks by text and audio, resume mid-answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts.event_types import EventType
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.conftest import WS_A, gateway_settings, receive_until, serving
from tests.gateway.pipeline import SPEECH, assert_answer_is_the_stages, pipeline_settings, stages
from tests.gateway.test_tenancy import session
from tests.harness import Collector, running
from tests.pg_fixtures import WorkspaceFactory
from tests.text import split_words as words  # test_tls_pipeline imports it from here

pytestmark = pytest.mark.timeout(240)


def of(request_id: str, got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in got if m.get("request_id") == request_id and "cursor" in m
            and m["type"] not in ("accepted",)]


async def test_websocket_asks_by_text_and_audio_then_resumes_mid_answer(
    nc: NATS, streams: None, settings: Settings, model_cache: Path
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    async with stages(cfg), serving(cfg) as gw, aiohttp.ClientSession() as http:
        token = gw.token(WS_A, "e2e")
        async with http.ws_connect(gw.ws_url(token)) as ws:
            await receive_until(ws, lambda m: m["type"] == "ready")
            # by audio: binary frames, then audio.end
            clip = (SPEECH / "en01.wav").read_bytes()
            for start in range(0, len(clip), 32_000):
                await ws.send_bytes(clip[start:start + 32_000])
            await ws.send_json({"type": "audio.end", "format": "wav"})
            audio_rid = (await receive_until(ws, lambda m: m["type"] == "accepted"))[-1][
                "request_id"]
            got = await receive_until(
                ws, lambda m: m["type"] in (EventType.ANSWER_FINAL, "error"), timeout=120)
            assert got[-1]["type"] == EventType.ANSWER_FINAL, got[-1]
            got += await drain(ws, 1.0)  # nothing more for this request comes after its final
            events = of(audio_rid, got)
            kinds = [m["type"] for m in events]
            assert kinds[-1] == EventType.ANSWER_FINAL, kinds
            assert kinds.count(EventType.TRANSCRIPT_FINAL) == 1
            assert kinds.count(EventType.ANSWER_FINAL) == 1
            first_final = kinds.index(EventType.TRANSCRIPT_FINAL)
            assert set(kinds[:first_final]) == {EventType.TRANSCRIPT_PARTIAL}
            assert set(kinds[first_final + 1:-1]) == {EventType.ANSWER_DELTA}
            assert [m["cursor"] for m in events] == sorted(m["cursor"] for m in events)
            transcript = events[first_final]["text"]
            assert words(transcript)[:4] == ["the", "quick", "brown", "fox"]
            answer = events[-1]
            assert "".join(m["text"] for m in events if m["type"] == EventType.ANSWER_DELTA) == answer[
                "text"]

            # by text, and the socket goes away after a couple of deltas
            async with Collector(nc, "mumu.answer.final.>") as finals:
                await ws.send_json(
                    {"type": "ask", "text": "Count from 1 to 40, separated by commas."})
                text_rid = (await receive_until(ws, lambda m: m["type"] == "accepted"))[-1][
                    "request_id"]
                before = await receive_until(ws, lambda m: m["type"] == EventType.ANSWER_DELTA
                                             and m["request_id"] == text_rid, timeout=60)
                await ws.close()
                await finals.wait_for(lambda ms: any(text_rid.encode() in m.data for m in ms),
                                      timeout=120)
        seen = of(text_rid, before)
        async with http.ws_connect(gw.ws_url(token)) as ws:
            await receive_until(ws, lambda m: m["type"] == "ready")
            await ws.send_json({"type": "resume", "after": seen[-1]["cursor"]})
            rest = of(text_rid, await receive_until(ws, lambda m: m["type"] == "resumed"))
            rest += of(text_rid, await drain(ws, 1.0))
    # the answer was unfinished at the disconnect: some of it arrives only after the resume
    assert [m for m in rest if m["type"] == EventType.ANSWER_DELTA]
    assert [m["type"] for m in seen + rest].count(EventType.ANSWER_FINAL) == 1
    assert rest[-1]["type"] == EventType.ANSWER_FINAL
    assert not {m["cursor"] for m in seen} & {m["cursor"] for m in rest}
    deltas = [m for m in seen + rest if m["type"] == EventType.ANSWER_DELTA]
    assert [m["index"] for m in deltas] == list(range(len(deltas)))
    assert "".join(m["text"] for m in deltas) == rest[-1]["text"]


async def drain(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Whatever else the socket sends within ``seconds``."""
    got: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                got.append(json.loads(msg.data))
    return got


async def test_ask_and_wait_returns_transcript_and_answer(
    nc: NATS, streams: None, settings: Settings, model_cache: Path, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys})
    _, key = await workspace("w")  # with a database, ingest checks the workspace exists
    async with stages(cfg), running(build_persist(cfg), cfg), serving(
        cfg
    ) as gw, aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/api/ready") as resp:  # every stage runs
            assert resp.status == 200, await resp.text()
        token = (await session(http, gw.url, key, session_id="w"))["token"]
        form = aiohttp.FormData()
        form.add_field("audio", (SPEECH / "en03.wav").read_bytes(), filename="q.wav")
        async with Collector(nc, "mumu.answer.>") as seen, http.post(
            f"{gw.url}/api/ask?wait=true", data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    assert "sunny" in words(body["transcript"])
    assert body["language"] == "en"
    assert_answer_is_the_stages(seen, body)
    assert body["timings"]["transcript"] <= body["timings"]["answer"]


async def test_a_cancel_on_the_websocket_stops_the_answer(
    nc: NATS, streams: None, settings: Settings, model_cache: Path
) -> None:
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    max_tokens = cfg.reason.max_tokens
    async with stages(cfg), serving(cfg) as gw, aiohttp.ClientSession() as http, \
            http.ws_connect(gw.ws_url(gw.token(WS_A, "cancel"))) as ws:
        await receive_until(ws, lambda m: m["type"] == "ready")
        await ws.send_json({"type": "ask", "text": "Count from 1 to 500, separated by commas."})
        rid = (await receive_until(ws, lambda m: m["type"] == "accepted"))[-1]["request_id"]
        got = await receive_until(ws, lambda m: m["type"] == EventType.ANSWER_DELTA, timeout=120)
        await ws.send_json({"type": "cancel", "request_id": rid})
        got += await receive_until(
            ws, lambda m: m["type"] in (EventType.ANSWER_FINAL, EventType.ERROR), timeout=60)
        got += await drain(ws, 1.0)
    cancelling = [m for m in got if m["type"] == "cancelling"]
    assert [m["request_id"] for m in cancelling] == [rid]
    events = of(rid, got)
    final = [m for m in events if m["type"] == EventType.ANSWER_FINAL]
    assert len(final) == 1, [m["type"] for m in events]
    assert final[0]["cancelled"] is True
    # it stopped early: counting to 500 needs far more than max_tokens, which an answer
    # that was not cancelled would have used up
    assert final[0]["usage"]["completion_tokens"] < max_tokens
    deltas = [m for m in events if m["type"] == EventType.ANSWER_DELTA]
    assert "".join(m["text"] for m in deltas) == final[0]["text"]
    assert events[-1] is final[0]  # no delta after the final
