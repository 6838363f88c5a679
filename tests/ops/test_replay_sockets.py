"""A live websocket of the workspace sees nothing of a `--to-stage persist` replay: the
next event it gets after the replay is the one published after it."""

from __future__ import annotations

import aiohttp
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts.event_types import EventType
from mumu.contracts.events import new_id
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, Results, gateway_settings, receive_until, serving
from tests.ops.replaying import mumu_json


async def test_a_live_socket_gets_none_of_the_replayed_transcripts(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
) -> None:
    results = Results(nc)
    async with serving(gateway_settings(settings)) as gateway, aiohttp.ClientSession() as http, \
            http.ws_connect(gateway.ws_url(gateway.token(WS_A, "s1"))) as ws:
        await receive_until(ws, lambda m: m["type"] == "ready")
        asked = [new_id() for _ in range(3)]
        for rid in asked:
            await results.transcript(WS_A, "s1", rid, f"question {rid}")
        got = await receive_until(
            ws, lambda m: m["type"] == EventType.TRANSCRIPT_FINAL and m["request_id"] == asked[-1])
        assert [m["request_id"] for m in got if m["type"] == EventType.TRANSCRIPT_FINAL] == asked

        summary = await mumu_json(nats_server, "replay", f"mumu.transcript.final.{WS_A}",
                                  "--to-stage", "persist")
        assert summary["published"] == 3
        marker = new_id()
        await results.final(WS_A, "s1", marker, "after the replay")
        after = await receive_until(ws, lambda m: m["type"] == EventType.ANSWER_FINAL)
    # had the socket been sent the replays, they would come first (stream order)
    assert [(m["type"], m["request_id"]) for m in after] == [(EventType.ANSWER_FINAL, marker)]
