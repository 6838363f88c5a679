"""A websocket over its life: the auth timeout, a token expiring on an open socket, a new
token moving the deadline, a replay failing underneath it; and the gateway's counters
moving by what the sockets did."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts.event_types import EventType
from mumu.gateway.feed import replay as real_replay
from mumu.gateway.settings import GatewaySettings
from mumu.settings import Settings
from tests.gateway.conftest import (
    WS_A,
    Gateway,
    Results,
    gateway_settings,
    is_type,
    receive_until,
    rid,
    serving,
)


def test_the_auth_timeout_is_5_seconds_unless_set() -> None:
    assert GatewaySettings().auth_timeout == 5.0
    assert GatewaySettings(auth_timeout=0.5).auth_timeout == 0.5


async def test_a_socket_that_never_authenticates_is_closed_after_the_auth_timeout(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with serving(gateway_settings(settings, auth_timeout=0.5)) as gw:
        started = time.monotonic()
        async with http.ws_connect(gw.ws_url()) as ws:  # no ?token= and no auth message
            error = (await receive_until(ws, is_type("error"), timeout=5))[-1]
            closing = await ws.receive(timeout=5)
        waited = time.monotonic() - started
    assert (error["code"], error["message"]) == ("unauthorized", "no auth message within 0.5 s")
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401
    assert 0.5 <= waited < 4.0


def expiring(gw: Gateway, session: str, seconds: float) -> str:
    """A token of ``session`` that expires ``seconds`` from now."""
    ttl = gw.signer.ttl
    return gw.signer.issue(WS_A, session, now=time.time() + seconds - ttl)[0]


async def test_a_token_that_expires_on_an_open_socket_closes_it_and_the_client_resumes(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    r = rid()
    async with http.ws_connect(gateway.ws_url(expiring(gateway, "exp", 1.5))) as ws:
        await receive_until(ws, is_type("ready"))
        delivered = await results.delta(WS_A, "exp", r, 0, "before ")
        before = (await receive_until(ws, is_type(EventType.ANSWER_DELTA)))[-1]
        error = (await receive_until(ws, is_type("error"), timeout=5))[-1]
        closing = await ws.receive(timeout=5)
    assert before["cursor"] == delivered
    assert error["code"] == "token_expired"
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401
    missed = await results.delta(WS_A, "exp", r, 1, "after")
    # a new token and the last cursor: the rest, once
    async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "exp"),
                                              after=before["cursor"])) as ws:
        got = await receive_until(ws, is_type("ready"))
    assert [(m["type"], m["cursor"]) for m in got if m["type"] == EventType.ANSWER_DELTA] == [
        (EventType.ANSWER_DELTA, missed)]


async def test_a_new_token_sent_on_the_socket_keeps_it_open_past_the_old_expiry(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    async with http.ws_connect(gateway.ws_url(expiring(gateway, "renew", 1.5))) as ws:
        await receive_until(ws, is_type("ready"))
        await ws.send_json({"type": "auth", "token": gateway.token(WS_A, "other")})
        refused = (await receive_until(ws, is_type("error")))[-1]
        renewed = gateway.token(WS_A, "renew")
        await ws.send_json({"type": "auth", "token": renewed})
        ok = (await receive_until(ws, is_type("authenticated")))[-1]
        await asyncio.sleep(2.0)  # past the first token's expiry
        delivered = await results.delta(WS_A, "renew", rid(), 0, "still open")
        got = await receive_until(ws, is_type(EventType.ANSWER_DELTA))
    assert refused["code"] == "bad_message"
    assert ok["expires_at"] == gateway.signer.verify(renewed).expires_at
    assert [m["cursor"] for m in got if m["type"] == EventType.ANSWER_DELTA] == [delivered]
    assert not [m for m in got if m["type"] == "error"]


def sample(text: str, name: str) -> float:
    """The value of one sample of a /metrics page (0 when absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def metrics(http: aiohttp.ClientSession, gw: Gateway) -> str:
    async with http.get(f"{gw.url}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_the_gateway_counters_move_by_what_the_sockets_did(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    sent = 'mumu_gateway_events_sent_total{type="answer.delta"}'
    finals = 'mumu_gateway_events_sent_total{type="answer.final"}'
    asks = 'mumu_gateway_asks_total{kind="text"}'
    delivered = "mumu_gateway_delivery_seconds_count"
    before = await metrics(http, gateway)
    r = rid()
    async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "m1"))) as one, \
            http.ws_connect(gateway.ws_url(gateway.token(WS_A, "m1"))) as two:
        for ws in (one, two):
            await receive_until(ws, is_type("ready"))
        for n in range(5):
            await results.delta(WS_A, "m1", r, n, f"{n}")
        await results.final(WS_A, "m1", r, "01234")
        for ws in (one, two):  # two sockets of one session: every event is sent twice
            await receive_until(ws, is_type(EventType.ANSWER_FINAL))
        for _ in range(3):
            await one.send_json({"type": "ask", "text": "how many?"})
            await receive_until(one, is_type("accepted"))
    after = await metrics(http, gateway)
    assert sample(after, sent) - sample(before, sent) == 10
    assert sample(after, finals) - sample(before, finals) == 2
    assert sample(after, delivered) - sample(before, delivered) == 12
    assert sample(after, asks) - sample(before, asks) == 3


async def test_a_replay_that_fails_closes_the_socket_and_the_client_resumes_without_loss(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JetStream fails a replay half way (here: after 3 of its events, the real replay's
    TimeoutError): the socket is closed (1013) instead of going on past what it never
    sent, and the client resumes from its last cursor without loss."""
    async def failing(*args: Any) -> AsyncIterator[tuple[int, Msg]]:
        n = 0
        async for item in real_replay(*args):
            if n == 3:
                raise TimeoutError("no message from JetStream for 5 s")
            n += 1
            yield item

    r = rid()
    cursors = [await results.delta(WS_A, "lost", r, n, f"{n}") for n in range(8)]
    token = gateway.token(WS_A, "lost")
    monkeypatch.setattr("mumu.gateway.sockets.replay", failing)
    async with http.ws_connect(gateway.ws_url(token)) as ws:
        await receive_until(ws, is_type("ready"))
        await ws.send_json({"type": "resume", "after": 0})
        got = []
        async with asyncio.timeout(15):  # (the server's pings restart receive's timeout)
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                got.append(json.loads(msg.data))
    assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert [(m["type"], m.get("code")) for m in got][-1] == ("error", "resume_failed")
    seen = [m["cursor"] for m in got if m["type"] == EventType.ANSWER_DELTA]
    assert seen == cursors[:3]
    monkeypatch.setattr("mumu.gateway.sockets.replay", real_replay)
    async with http.ws_connect(gateway.ws_url(token, after=seen[-1])) as again:
        rest = await receive_until(again, is_type("ready"))
    assert seen + [m["cursor"] for m in rest if m["type"] == EventType.ANSWER_DELTA] == cursors
