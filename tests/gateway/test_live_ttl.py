"""Partials and deltas expire from MUMU_RESULTS (per-message TTL) while finals stay, and a
websocket resume across expired deltas neither fails nor repeats."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import nats.js.errors
from nats.aio.client import Client as NATS

from mumu.broker.streams import apply_all, load_stream_configs, stream_config
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.event_types import EventType
from mumu.runtime.messages import Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from tests.gateway.conftest import (
    WS_A,
    Gateway,
    Made,
    delta_event,
    final_event,
    partial_event,
    receive_until,
    rid,
    transcript_event,
)

TTL = 1
SESSION = "s-ttl"


async def publish_answer(nc: NATS, request_id: str) -> dict[str, int]:
    """What transcribe and reason publish for one request, through the stages' publisher
    with a one-second live TTL: name → stream sequence."""
    publisher = Publisher(nc, StageMetrics("test"), live_ttl=TTL)
    question = "Is it raining?"
    events: dict[str, Made] = {
        "partial": partial_event(WS_A, SESSION, request_id, 0, question),
        "transcript": transcript_event(WS_A, SESSION, request_id, question),
        "delta0": delta_event(WS_A, SESSION, request_id, 0, "No, "),
        "delta1": delta_event(WS_A, SESSION, request_id, 1, "it is sunny."),
        "answer": final_event(WS_A, SESSION, request_id, "No, it is sunny.",
                              question=question),
    }
    js = nc.jetstream()
    before = (await js.stream_info(subjects.STREAM_RESULTS)).state.last_seq
    seqs = {}
    for name, (pattern, event) in events.items():
        await publisher.publish(Outbound.of(pattern.for_workspace(WS_A), event), {})
        seqs[name] = before + len(seqs) + 1
    return seqs


async def gone(nc: NATS, seq: int) -> bool:
    try:
        await nc.jetstream().get_msg(subjects.STREAM_RESULTS, seq)
    except nats.js.errors.NotFoundError:
        return True
    return False


async def test_deltas_and_partials_expire_finals_stay_and_a_resume_across_them_works(
    nc: NATS, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    request_id = rid()
    seqs = await publish_answer(nc, request_id)
    js = nc.jetstream()
    for name in ("partial", "delta0", "delta1"):
        stored = await js.get_msg(subjects.STREAM_RESULTS, seqs[name])
        assert (stored.headers or {}).get(h.TTL) == str(TTL), name
    for name in ("transcript", "answer"):
        stored = await js.get_msg(subjects.STREAM_RESULTS, seqs[name])
        assert h.TTL not in (stored.headers or {}), name

    async with asyncio.timeout(15):  # the server expires them about a second later
        while not all([await gone(nc, seqs[n]) for n in ("partial", "delta0", "delta1")]):
            await asyncio.sleep(0.1)
    assert not await gone(nc, seqs["transcript"]) and not await gone(nc, seqs["answer"])

    token = gateway.token(WS_A, SESSION)
    # a client that saw the first delta resumes after it: the second is gone, the final not
    async with http.ws_connect(gateway.ws_url(token, after=seqs["delta0"])) as ws:
        got = await receive_until(ws, lambda m: m["type"] == "resumed")
        await ws.send_json({"type": "resume", "after": seqs["delta0"]})  # nothing twice
        again = await receive_until(ws, lambda m: m["type"] == "resumed")
    kinds = [(m["type"], m.get("cursor")) for m in got if m.get("request_id") == request_id]
    assert kinds == [(EventType.ANSWER_FINAL, seqs["answer"])]
    assert got[-1]["replayed"] == 1
    assert [m for m in again if m.get("request_id") == request_id] == []
    # from the start: the finals, which carry the whole text
    async with http.ws_connect(gateway.ws_url(token, after=0)) as ws:
        got = await receive_until(ws, lambda m: m["type"] == "resumed")
    answer = [m for m in got if m["type"] == EventType.ANSWER_FINAL]
    assert [m["text"] for m in answer] == ["No, it is sunny."]
    assert [m["type"] for m in got if m.get("request_id") == request_id] == [
        EventType.TRANSCRIPT_FINAL, EventType.ANSWER_FINAL]


async def test_apply_turns_on_message_ttls_on_an_existing_results_stream(nc: NATS) -> None:
    (results,) = [c for c in load_stream_configs() if c["name"] == subjects.STREAM_RESULTS]
    assert results["allow_msg_ttl"] is True
    older = {k: v for k, v in results.items() if k != "allow_msg_ttl"}
    await nc.request("$JS.API.STREAM.CREATE." + subjects.STREAM_RESULTS,
                     json.dumps(older).encode())
    js = nc.jetstream()
    subject = subjects.ANSWER_DELTA.for_workspace(WS_A)
    try:
        await js.publish(subject, b"{}", headers={h.TTL: "60"})
    except nats.js.errors.APIError as exc:
        refused = exc
    else:
        raise AssertionError("a stream without allow_msg_ttl takes no per-message TTL")
    assert "ttl" in str(refused).lower()
    changes = {c.name: c for c in await apply_all(nc)}
    assert changes[subjects.STREAM_RESULTS].action == "updated"
    assert changes[subjects.STREAM_RESULTS].diff["allow_msg_ttl"] == (False, True)
    live = await stream_config(nc, subjects.STREAM_RESULTS)
    assert live is not None and live["allow_msg_ttl"] is True
    ack = await js.publish(subject, b"{}", headers={h.TTL: "60"})
    assert ack.seq == 1
