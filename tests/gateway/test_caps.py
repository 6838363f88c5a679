"""The gateway's caps on what holds its memory: sockets (per workspace and in total),
websocket audio buffers, and requests waiting for their result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from nats.aio.client import Client as NATS

from mumu.gateway.settings import GatewaySettings
from mumu.settings import Settings
from tests.gateway.conftest import (
    WS_A,
    WS_B,
    Gateway,
    Results,
    gateway_settings,
    is_type,
    receive_until,
    rid,
    serving,
)
from tests.gateway.test_http import wav
from tests.harness import Collector
from tests.pg_fixtures import WorkspaceFactory


@contextlib.asynccontextmanager
async def capped(settings: Settings, **caps: Any) -> AsyncIterator[Gateway]:
    async with serving(gateway_settings(settings, **caps)) as gw:
        yield gw


async def ready(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url)
    await receive_until(ws, is_type("ready"))
    return ws


async def refused(http: aiohttp.ClientSession, url: str) -> aiohttp.WSServerHandshakeError:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url)
    return caught.value


def test_the_caps_and_the_auth_timeout_have_defaults() -> None:
    gw = GatewaySettings()
    assert (gw.max_sockets, gw.max_sockets_per_workspace) == (2_000, 500)
    assert (gw.max_waiting, gw.max_waiting_per_workspace) == (32, 8)
    assert (gw.max_audio_buffers, gw.max_audio_buffers_per_workspace) == (32, 8)
    assert gw.auth_timeout == 5.0


async def test_a_workspace_past_its_socket_cap_is_refused_and_others_still_connect(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with capped(settings, max_sockets_per_workspace=3) as gw:
        open_ = [await ready(http, gw.ws_url(gw.token(WS_A, f"s{n}"))) for n in range(3)]
        with_token = await refused(http, gw.ws_url(gw.token(WS_A, "s3")))
        other = await ready(http, gw.ws_url(gw.token(WS_B, "s0")))  # another workspace
        # a socket that authenticates by its first message: refused once it says who it is
        late = await http.ws_connect(gw.ws_url())
        await late.send_json({"type": "auth", "token": gw.token(WS_A, "s4")})
        error = (await receive_until(late, is_type("error")))[-1]
        closing = await late.receive(timeout=5)
        await open_[0].close()  # a place frees up
        again = await ready(http, gw.ws_url(gw.token(WS_A, "s5")))
        for ws in [*open_[1:], other, again]:
            await ws.close()
    assert with_token.status == 429
    assert with_token.headers["Retry-After"] == "5"
    assert (error["code"], closing.type, late.close_code) == (
        "too_many_sockets", aiohttp.WSMsgType.CLOSE, 4429)
    assert "MUMU_GATEWAY__MAX_SOCKETS_PER_WORKSPACE" in error["message"]


async def test_the_gateway_past_its_total_socket_cap_answers_503_counting_unauthenticated(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with capped(settings, max_sockets=3, auth_timeout=30.0) as gw:
        silent = [await http.ws_connect(gw.ws_url()) for _ in range(2)]  # no auth yet
        one = await ready(http, gw.ws_url(gw.token(WS_B, "s0")))
        full = await refused(http, gw.ws_url(gw.token(WS_A, "s1")))
        async with http.get(f"{gw.url}/api/ws?token={gw.token(WS_A, 's1')}") as resp:
            body = await resp.json()  # the same refusal, read as plain HTTP
        await silent[0].close()
        admitted = await ready(http, gw.ws_url(gw.token(WS_A, "s1")))
        for ws in [silent[1], one, admitted]:
            await ws.close()
    assert (full.status, full.headers["Retry-After"]) == (503, "5")
    assert body["error"]["code"] == "overloaded"
    assert "MUMU_GATEWAY__MAX_SOCKETS" in body["error"]["message"]


async def test_waiting_asks_past_their_caps_get_429_then_503_and_the_places_come_back(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession, results: Results
) -> None:
    async with capped(settings, max_waiting_per_workspace=2, max_waiting=3,
                      wait_timeout=30.0) as gw:

        async def ask(ws: str, session: str, request_id: str) -> aiohttp.ClientResponse:
            return await http.post(
                f"{gw.url}/api/ask?wait=true&request_id={request_id}",
                json={"text": "wait for me"},
                headers={"Authorization": f"Bearer {gw.token(ws, session)}"})

        ids = [rid() for _ in range(3)]
        async with Collector(nc, "mumu.ingest.text.>") as seen:
            waiting = [asyncio.create_task(ask(WS_A, "w", ids[0])),
                       asyncio.create_task(ask(WS_A, "w", ids[1]))]
            await seen.wait_count("mumu.ingest.text.", 2)  # both published: both waiting
            third = await ask(WS_A, "w", rid())
            waiting.append(asyncio.create_task(ask(WS_B, "w", ids[2])))
            await seen.wait_count("mumu.ingest.text.", 3)
            full = await ask(WS_B, "w", rid())
        no_wait = await http.post(f"{gw.url}/api/ask", json={"text": "no waiting"},
                                  headers={"Authorization": f"Bearer {gw.token(WS_A, 'w')}"})
        for n, (ws, request_id) in enumerate(zip((WS_A, WS_A, WS_B), ids, strict=True)):
            await results.final(ws, "w", request_id, f"answer {n}")
        answered = [await t for t in waiting]
        next_one = asyncio.create_task(ask(WS_A, "w", ids[0]))  # a duplicate: its answer
        again = await asyncio.wait_for(next_one, 10)
        third_body, full_body = await third.json(), await full.json()
    assert [r.status for r in answered] == [200, 200, 200]
    assert [(await r.json())["answer"] for r in answered] == ["answer 0", "answer 1", "answer 2"]
    assert (third.status, third.headers["Retry-After"], third_body["error"]["code"]) == (
        429, "5", "too_many_waiting")
    assert "MUMU_GATEWAY__MAX_WAITING_PER_WORKSPACE" in third_body["error"]["message"]
    assert (full.status, full.headers["Retry-After"], full_body["error"]["code"]) == (
        503, "5", "overloaded")
    assert no_wait.status == 202  # an ask that does not wait holds no place
    assert again.status == 200


async def test_websocket_audio_uploads_past_the_cap_are_refused_until_a_place_frees(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with capped(settings, max_audio_buffers_per_workspace=1) as gw:
        one = await ready(http, gw.ws_url(gw.token(WS_A, "a1")))
        two = await ready(http, gw.ws_url(gw.token(WS_A, "a2")))
        await one.send_bytes(b"RIFF" + b"\0" * 1000)  # holds the workspace's place
        await one.send_json({"type": "ping"})
        await receive_until(one, is_type("pong"))
        await two.send_bytes(b"RIFF" + b"\0" * 1000)
        await two.send_bytes(b"\0" * 1000)  # the rest of a refused upload: no more errors
        await two.send_json({"type": "audio.end", "format": "wav"})  # nothing to ask
        await two.send_json({"type": "ping"})
        refusal = await receive_until(two, is_type("pong"))
        await one.send_json({"type": "audio.end", "format": "wav"})  # frees the place
        await receive_until(one, is_type("error"))  # (not real audio: 415)
        await two.send_bytes(b"RIFF" + b"\0" * 1000)
        await two.send_json({"type": "ping"})
        accepted = await receive_until(two, is_type("pong"))
        await one.close()
        await two.close()
    assert [(m["type"], m.get("code")) for m in refusal] == [
        ("error", "too_many_uploads"), ("pong", None)]
    assert "MUMU_GATEWAY__MAX_AUDIO_BUFFERS_PER_WORKSPACE" in refusal[0]["message"]
    assert [m["type"] for m in accepted] == ["pong"]


async def test_openai_transcriptions_past_the_waiting_cap_get_429_with_retry_after(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, http: aiohttp.ClientSession,
) -> None:
    """No transcribe stage runs: the first request waits, holding the workspace's one
    place; the official client sees the second refused (it retries nothing here). The
    cancelled first request hangs up, which ends its handler (``tests/gateway/test_hangup.py``)."""
    cfg = gateway_settings(settings, max_waiting_per_workspace=1, wait_timeout=6.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, api_key = await workspace("oai-cap")
    async with serving(cfg) as gw, Collector(nc, "mumu.ingest.audio.>") as seen:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
        first = asyncio.create_task(client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav(1.0))))
        await seen.wait_count("mumu.ingest.audio.", 1)  # published: it is waiting
        with pytest.raises(openai.RateLimitError) as refused_:
            await client.audio.transcriptions.create(model="whisper-1", file=("b.wav", wav(1.0)))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    response = refused_.value.response
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "too_many_waiting"
