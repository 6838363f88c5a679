"""The websocket: ordered results with cursors, resume without loss or duplicates, bad input."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
from aiohttp import AddrInfoType
from nats.aio.client import Client as NATS

from mumu.contracts.event_types import EventType
from mumu.contracts.events import TextAsk
from mumu.gateway.app import SETTINGS
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
from tests.harness import Collector


async def test_ask_is_published_and_results_stream_back_in_order(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, results: Results
) -> None:
    async with Collector(nc, "mumu.ingest.text.>") as seen, http.ws_connect(
        gateway.ws_url(gateway.token(WS_A, "s1"))
    ) as ws:
        ready = await receive_until(ws, is_type("ready"))
        assert ready[-1]["session_id"] == "s1"
        await ws.send_json({"type": "ask", "text": "What colour is the sky?"})
        accepted = (await receive_until(ws, is_type("accepted")))[-1]
        request_id = accepted["request_id"]
        asks = await seen.wait_count("mumu.ingest.text.", 1)
        published = TextAsk.model_validate_json(asks[0].data)
        assert seen.on("mumu.ingest.text.")[0].subject == f"mumu.ingest.text.{WS_A}"
        assert (published.request_id, published.session_id, published.text) == (
            request_id, "s1", "What colour is the sky?")

        await results.delta(WS_A, "s1", request_id, 0, "It is ")
        await results.delta(WS_A, "s1", request_id, 1, "blue.")
        await results.final(WS_A, "s1", request_id, "It is blue.")
        got = await receive_until(ws, is_type(EventType.ANSWER_FINAL))
    assert [m["type"] for m in got] == [EventType.ANSWER_DELTA, EventType.ANSWER_DELTA, EventType.ANSWER_FINAL]
    assert all(m["request_id"] == request_id for m in got)
    cursors = [m["cursor"] for m in got]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 3
    assert "".join(m["text"] for m in got[:2]) == got[2]["text"]


async def test_resume_replays_exactly_what_was_missed(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    token = gateway.token(WS_A, "s1")
    r = rid()
    async with http.ws_connect(gateway.ws_url(token)) as ws:
        await receive_until(ws, is_type("ready"))
        for n in range(3):
            await results.delta(WS_A, "s1", r, n, f"d{n} ")
        seen = await receive_until(ws, lambda m: m.get("index") == 2)
    last_seen = seen[-1]["cursor"]
    # while disconnected: the rest of the answer, and events that are not ours
    await results.delta(WS_A, "s1", r, 3, "d3 ")
    await results.delta(WS_A, "s2", rid(), 0, "other session")
    await results.delta(WS_B, "s1", rid(), 0, "other workspace")
    await results.delta(WS_A, "s1", r, 4, "d4")
    await results.final(WS_A, "s1", r, "d0 d1 d2 d3 d4")

    async with http.ws_connect(gateway.ws_url(token)) as ws:
        await receive_until(ws, is_type("ready"))
        await ws.send_json({"type": "resume", "after": last_seen})
        replayed = await receive_until(ws, is_type("resumed"))
        await results.delta(WS_A, "s1", r, 5, "late")  # live after the resume: once
        live = await receive_until(ws, is_type(EventType.ANSWER_DELTA))
    missed = [m for m in replayed if m["type"].startswith("answer.")]
    assert [(m["type"], m.get("index")) for m in missed] == [
        (EventType.ANSWER_DELTA, 3), (EventType.ANSWER_DELTA, 4), (EventType.ANSWER_FINAL, None)]
    assert all(m["cursor"] > last_seen for m in missed)
    assert replayed[-1]["replayed"] == 3
    assert [m["index"] for m in live] == [5]
    seen_text = "".join(m["text"] for m in seen if m["type"] == EventType.ANSWER_DELTA)
    assert seen_text + "".join(m["text"] for m in missed[:2]) == missed[2]["text"]


async def test_resume_on_connect_and_no_event_twice_when_live_ones_came_first(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    token = gateway.token(WS_A, "s9")
    r = rid()
    first = await results.delta(WS_A, "s9", r, 0, "a")
    await results.delta(WS_A, "s9", r, 1, "b")
    async with http.ws_connect(gateway.ws_url(token, after=first)) as ws:
        got = await receive_until(ws, is_type("resumed"))
        assert [m.get("index") for m in got if m["type"] == EventType.ANSWER_DELTA] == [1]
        await results.delta(WS_A, "s9", r, 2, "c")
        await receive_until(ws, lambda m: m.get("index") == 2)
        # resuming again from the start sends only what this socket never sent (index 0)
        await ws.send_json({"type": "resume", "after": 0})
        again = await receive_until(ws, is_type("resumed"))
        await ws.send_json({"type": "resume", "after": 0})  # all of it was sent by now
        third = await receive_until(ws, is_type("resumed"))
    assert [m.get("index") for m in again if m["type"] == EventType.ANSWER_DELTA] == [0]
    assert [m for m in third if m["type"] == EventType.ANSWER_DELTA] == []
    assert third[-1]["replayed"] == 0


async def test_bad_messages_get_errors_and_other_clients_keep_being_served(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "calm"))) as calm:
        await receive_until(calm, is_type("ready"))
        async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "noisy"))) as ws:
            await receive_until(ws, is_type("ready"))
            cases = [
                ("{not json", "bad_message"),
                ("[1, 2]", "bad_message"),
                (json.dumps({"type": "launch"}), "unknown_type"),
                (json.dumps({"type": "ask"}), "bad_message"),
                (json.dumps({"type": "ask", "text": "x" * 40_000}), "too_large"),
                (json.dumps({"type": "resume", "after": "yesterday"}), "bad_message"),
                (json.dumps({"type": "audio.end", "format": "wav"}), "empty_audio"),
                (json.dumps({"type": "cancel", "request_id": "../../x"}), "bad_message"),
            ]
            for raw, code in cases:
                await ws.send_str(raw)
                error = (await receive_until(ws, is_type("error")))[-1]
                assert error["code"] == code, raw
                assert "cursor" in error
                assert "request_id" in error
            await ws.send_bytes(b"this is not audio")
            await ws.send_json({"type": "audio.end", "format": "wav"})
            assert (await receive_until(ws, is_type("error")))[-1]["code"] == "unsupported_audio"
            await ws.send_bytes(b"\0" * (gateway.app[SETTINGS].gateway.max_frame_bytes + 1))
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await calm.send_json({"type": "ping"})
        assert (await receive_until(calm, is_type("pong")))[-1]["type"] == "pong"
        r = rid()
        await results.delta(WS_A, "calm", r, 0, "still here")
        assert (await receive_until(calm, is_type(EventType.ANSWER_DELTA)))[-1]["text"] == "still here"


async def test_bad_tokens_are_refused(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    forged = gateway.token(WS_A, "s1")[:-4] + "AAAA"
    async with http.get(gateway.ws_url(forged)) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_token"
    expired = gateway.signer.issue(WS_A, "s1", now=0)[0]
    async with http.ws_connect(gateway.ws_url()) as ws:
        await ws.send_json({"type": "auth", "token": expired})
        error = (await receive_until(ws, is_type("error")))[-1]
        assert "expired" in error["message"]
        await ws.receive(timeout=5)
        assert ws.close_code == 4401
    async with http.ws_connect(gateway.ws_url()) as ws:  # the token as the first message
        await ws.send_json({"type": "auth", "token": gateway.token(WS_A, "s1")})
        assert (await receive_until(ws, is_type("ready")))[-1]["session_id"] == "s1"
    # non-ASCII tokens (hmac.compare_digest refuses to compare them) are 401, not 500
    async with http.get(gateway.ws_url("abc.%C3%A9")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_token"
    for method, path in (("POST", "/api/ask"), ("GET", "/api/sessions/s1/history")):
        async with http.request(method, gateway.url + path, json={"text": "hi"},
                                headers={"Authorization": "Bearer abc.\u00e9"}) as resp:
            assert resp.status == 401, (path, await resp.text())
    async with http.ws_connect(gateway.ws_url()) as ws:
        await ws.send_json({"type": "auth", "token": "abc.\u00e9"})
        assert "malformed" in (await receive_until(ws, is_type("error")))[-1]["message"]


async def test_a_socket_never_sees_another_workspace_or_session(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    async with http.ws_connect(gateway.ws_url(gateway.token(WS_A, "same"))) as a:
        start = (await receive_until(a, is_type("ready")))[-1]["cursor"]
        await results.delta(WS_B, "same", rid(), 0, "B's secret")
        await results.delta(WS_A, "other", rid(), 0, "another session")
        mine = rid()
        await results.final(WS_A, "same", mine, "mine")
        got = await receive_until(a, is_type(EventType.ANSWER_FINAL))
        assert [m["request_id"] for m in got if m["type"].startswith("answer")] == [mine]
        await a.send_json({"type": "resume", "after": start})
        replay = await receive_until(a, is_type("resumed"))
    assert not [m for m in replay if m["type"].startswith("answer")]


def small_receive_buffer(addr: AddrInfoType) -> socket.socket:
    """A client socket whose kernel holds at most ~64 KiB unread: left to autotune, a
    loopback receive buffer grows up to tcp_rmem's maximum (32 MiB here), enough to take
    all 19 MB of the test below while the client reads nothing, so the gateway never
    saw a slow client (a CI failure under load)."""
    family, type_, proto, _, _ = addr
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    return sock


async def test_a_client_that_falls_behind_is_closed_and_resumes_without_loss(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession, results: Results
) -> None:
    # a client that reads nothing does not answer pings either: with the tests' 5 s
    # heartbeat a loaded machine (publishing 19 MB takes a while) closed it 1006 instead
    async with (serving(gateway_settings(settings, client_queue=2, heartbeat=120.0)) as gw,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    socket_factory=small_receive_buffer)) as slow):
        token = gw.token(WS_A, "slow")
        r = rid()
        ws = await slow.ws_connect(gw.ws_url(token), max_msg_size=0)
        await receive_until(ws, is_type("ready"))
        # 300 x 64 KB while the client reads nothing: more than the socket buffers hold,
        # past the gateway's high-water mark, then past its 2-frame queue
        padding = "x" * 64_000
        for chunk in range(0, 300, 50):
            await asyncio.gather(*(results.delta(WS_A, "slow", r, n, f"{n},{padding}")
                                   for n in range(chunk, chunk + 50)))
        seen: list[dict[str, object]] = []
        while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
            seen.append(json.loads(msg.data))
        assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        after = max((int(m["cursor"]) for m in seen if "index" in m), default=0)  # type: ignore[call-overload]
        async with http.ws_connect(gw.ws_url(token, after=after), max_msg_size=0) as again:
            rest = await receive_until(again, is_type("resumed"))
    indexes = [m["index"] for m in seen + rest if m["type"] == EventType.ANSWER_DELTA]
    assert sorted(indexes) == list(range(300))


async def test_control_cursors_never_run_ahead_of_what_the_client_received(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    token = gateway.token(WS_A, "gap")
    r = rid()
    async with http.ws_connect(gateway.ws_url(token)) as ws:
        await receive_until(ws, is_type("ready"))
        first = await results.delta(WS_A, "gap", r, 0, "seen ")
        await receive_until(ws, is_type(EventType.ANSWER_DELTA))
    missed = await results.delta(WS_A, "gap", r, 1, "missed")  # while disconnected
    async with http.ws_connect(gateway.ws_url(token)) as ws:
        ready = (await receive_until(ws, is_type("ready")))[-1]
        await ws.send_json({"type": "ping"})
        pong = (await receive_until(ws, is_type("pong")))[-1]
        assert ready["cursor"] < missed and pong["cursor"] < missed
        await ws.send_json({"type": "resume", "after": pong["cursor"]})
        replayed = await receive_until(ws, is_type("resumed"))
    assert missed in [m["cursor"] for m in replayed if m["type"] == EventType.ANSWER_DELTA]
    # resuming at connect: ready comes after the replay and carries its last cursor
    async with http.ws_connect(gateway.ws_url(token, after=first)) as ws:
        got = await receive_until(ws, is_type("ready"))
    assert [m["type"] for m in got] == [EventType.ANSWER_DELTA, "resumed", "ready"]
    assert got[0]["cursor"] == got[-1]["cursor"] == missed


async def test_resumes_run_one_at_a_time_and_spend_the_workspace_rate_limit(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession, results: Results
) -> None:
    cfg = gateway_settings(settings, rate_limit_burst=3, rate_limit_per_second=0.01)
    async with serving(cfg) as gw:
        r = rid()
        padding = "x" * 64_000  # 100 of them: more than the socket buffers, the replay waits
        await asyncio.gather(*(results.delta(WS_A, "many", r, n, f"{n},{padding}")
                               for n in range(100)))
        ws = await http.ws_connect(gw.ws_url(gw.token(WS_A, "many")), max_msg_size=0)
        await receive_until(ws, is_type("ready"))
        await ws.send_json({"type": "resume", "after": 0})
        await ws.send_json({"type": "resume", "after": 0})  # while the first one replays
        await ws.send_json({"type": "ping"})  # answered during the replay
        got = await receive_until(ws, is_type("resumed"))
        kinds = [m["type"] for m in got]
        assert kinds.count(EventType.ANSWER_DELTA) == 100
        assert [m["code"] for m in got if m["type"] == "error"] == ["busy"]
        assert kinds.index("pong") < kinds.index("resumed")
        for _ in range(2):  # the burst is 3: two more resumes, then 429-like refusals
            await ws.send_json({"type": "resume", "after": 0})
            await receive_until(ws, is_type("resumed"))
        await ws.send_json({"type": "resume", "after": 0})
        refused = (await receive_until(ws, is_type("error")))[-1]
        assert refused["code"] == "rate_limited"
        await ws.close()


async def test_a_rate_limited_resume_at_connect_closes_instead_of_going_live_past_a_gap(
    nc: NATS, streams: None, settings: Settings, http: aiohttp.ClientSession, results: Results
) -> None:
    cfg = gateway_settings(settings, rate_limit_burst=1, rate_limit_per_second=0.01)
    async with serving(cfg) as gw:
        token = gw.token(WS_A, "limited")
        missed = await results.delta(WS_A, "limited", rid(), 0, "missed")
        async with http.ws_connect(gw.ws_url(token, after=0)) as ws:  # spends the burst
            await receive_until(ws, is_type("ready"))
        async with http.ws_connect(gw.ws_url(token, after=0)) as ws:
            got = []  # until the close (the gateway used to go on: error, then ready)
            async with asyncio.timeout(10):  # (the server's pings restart receive's timeout)
                while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                    got.append(json.loads(msg.data))
    assert [(m["type"], m.get("code")) for m in got] == [("error", "rate_limited")]
    assert got[0]["cursor"] == 0 < missed  # nothing went out live past the unreplayed gap
    assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
