"""The websocket's live streams at the gateway, on a real nats-server (no model): what the
gateway publishes (the ``LiveStart`` and numbered chunks ending with ``Mumu-Stream-End``),
and every bad input's clear error while the socket and the other streams go on: frames
before ``stream.start``, a wrong format, a sample rate other than 16 kHz, a second start,
an end without a stream, webm that does not decode, a stream past the longest audio or the
day's audio, one left without an end, a socket closed mid-stream, and the gateway's cap on
audio places."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, Gateway, gateway_settings, serving
from tests.live.ws_live import Reader

pytestmark = pytest.mark.timeout(120)
SECOND = 32_000  # bytes of 16 kHz PCM16


@pytest.fixture
async def gw(nc: NATS, streams: None, settings: Settings) -> AsyncIterator[Gateway]:
    cfg = gateway_settings(settings, stream_idle_timeout=5.0, max_audio_buffers_per_workspace=2)
    quota = cfg.quota.model_copy(update={"longest_audio": 1.0, "audio_seconds_per_day": 2.5})
    cfg = cfg.model_copy(update={"quota": quota})
    async with serving(cfg) as gateway:
        yield gateway


async def chunks(nc: NATS, stream_id: str) -> list[tuple[dict[str, str], bytes]]:
    """The stream's chunks in MUMU_INGEST, up to the one that ends it."""
    js = nc.jetstream()
    sub = await js.subscribe(subjects.live_chunk(stream_id, WS_A),
                             stream=subjects.STREAM_INGEST, ordered_consumer=True)
    got: list[tuple[dict[str, str], bytes]] = []
    try:
        while not got or got[-1][0].get(h.STREAM_END) != "true":
            msg = await sub.next_msg(timeout=10)
            got.append((dict(msg.headers or {}), msg.data))
    finally:
        await sub.unsubscribe()
    return got


def assert_numbered(got: list[tuple[dict[str, str], bytes]]) -> None:
    assert [int(hd[h.CHUNK_SEQ]) for hd, _ in got] == list(range(1, len(got) + 1))
    assert [hd.get(h.STREAM_END) for hd, _ in got] == [None] * (len(got) - 1) + ["true"]


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, reader: Reader) -> None:
        self.ws, self.reader = ws, reader

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, kind: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th message of ``kind``."""
        await self.reader.wait(lambda _: len(self.reader.of_type(kind)) >= count, 20)
        return self.reader.of_type(kind)[count - 1]


async def open_client(http: aiohttp.ClientSession, gw: Gateway, session: str
                      ) -> tuple[aiohttp.ClientWebSocketResponse, Reader]:
    ws = await http.ws_connect(gw.ws_url(gw.token(WS_A, session)))
    reader = await Reader(ws).__aenter__()
    await reader.wait(lambda _: reader.of_type("ready"))
    return ws, reader


async def test_live_stream_bad_inputs_get_clear_errors_and_the_streams_go_on(
    nc: NATS, gw: Gateway,
) -> None:
    async with aiohttp.ClientSession() as http:
        a = Client(*await open_client(http, gw, "a"))
        b = Client(*await open_client(http, gw, "b"))
        # b streams while a misbehaves
        await b.send({"type": "stream.start", "format": "pcm16", "language": "en"})
        b_started = await b.next("stream.started")
        b_audio = bytes(range(256)) * 40  # 10240 bytes, any PCM will do here
        await b.ws.send_bytes(b_audio[:5000])

        await a.ws.send_bytes(b"\x01\x02" * 1000)  # before any stream.start: an upload
        await a.send({"type": "stream.start", "format": "mp3"})
        await a.send({"type": "stream.start", "format": "pcm16", "sample_rate": 44100})
        await a.send({"type": "stream.end"})
        await a.send({"type": "stream.start", "format": "pcm16"})
        await a.next("stream.started")
        await a.send({"type": "stream.start", "format": "pcm16"})
        errors = [await a.next("error", n) for n in range(1, 6)]
        assert [e["code"] for e in errors] == [
            "unsupported_audio", "unsupported_audio", "no_stream", "frames_before_start",
            "busy"]
        assert "pcm16 or webm" in errors[0]["message"]
        assert "16000 Hz" in errors[1]["message"]
        assert "2000 bytes" in errors[3]["message"]
        a_started = a.reader.of_type("stream.started")[0]
        assert a_started["stream_id"] in errors[4]["message"]

        # a third stream in this workspace: past the cap of audio places (2 here)
        c = Client(*await open_client(http, gw, "c"))
        await c.send({"type": "stream.start", "format": "pcm16"})
        refused = await c.next("error")
        assert refused["code"] == "too_many_uploads"

        # b was never disturbed: its stream ends with every byte, numbered
        await b.ws.send_bytes(b_audio[5000:])
        await b.send({"type": "stream.end"})
        got = await chunks(nc, b_started["stream_id"])
        assert_numbered(got)
        assert b"".join(data for _, data in got) == b_audio
        assert not b.reader.of_type("error")

        # a closes mid-stream: its stream is ended (what was said becomes final)
        await a.ws.send_bytes(b"\x00\x01" * 4000)
        await a.ws.close()
        got = await chunks(nc, a_started["stream_id"])
        assert_numbered(got)
        assert sum(len(d) for _, d in got) == 8000

        # c may stream now that a's place is free; past 1 s (the longest audio here) it is
        # ended at exactly 1 s
        await c.send({"type": "stream.start", "format": "pcm16"})
        c_started = await c.next("stream.started")
        await c.ws.send_bytes(b"\x00\x00" * SECOND)  # 2 s
        too_long = await c.next("error", 2)
        assert too_long["code"] == "too_long" and "longest audio (1 s)" in too_long["message"]
        got = await chunks(nc, c_started["stream_id"])
        assert_numbered(got)
        assert sum(len(d) for _, d in got) == SECOND
        await c.ws.send_bytes(b"\x00\x00" * 100)  # dropped: the stream was ended
        await c.send({"type": "stream.end"})  # taken quietly

        # no audio for the idle timeout (5 s here): ended with stream_timeout
        await c.send({"type": "stream.start", "format": "pcm16"})
        idle = await c.next("stream.started", 2)
        await c.ws.send_bytes(b"\x00\x00" * 4000)
        timeout = await c.next("error", 3)
        assert timeout["code"] == "stream_timeout"
        got = await chunks(nc, idle["stream_id"])
        assert_numbered(got)

        # webm that is not webm: a clear error, the stream ended, the socket goes on
        await c.send({"type": "stream.start", "format": "webm"})
        bad = await c.next("stream.started", 3)
        await c.ws.send_bytes(b"this is not a webm file at all" * 100)
        await c.send({"type": "stream.end"})
        undecodable = await c.next("error", 4)
        assert undecodable["code"] == "unsupported_audio" and "webm" in undecodable["message"]
        assert_numbered(await chunks(nc, bad["stream_id"]))
        await c.send({"type": "ping"})
        await c.next("pong")

        # every stream's seconds counted against the day's audio (2.5 s here): 0.32 + 0.25
        # + 1 + 0.25 are gone, so this stream may carry what is left, and then none is left
        await c.send({"type": "stream.start", "format": "pcm16"})
        last = await c.next("stream.started", 4)
        await c.ws.send_bytes(b"\x00\x00" * SECOND)
        spent = await c.next("error", 5)
        assert spent["code"] == "too_long" and "audio left today (0.68 s)" in spent["message"]
        assert round(sum(len(d) for _, d in await chunks(nc, last["stream_id"])) / SECOND, 2) == 0.68
        await c.send({"type": "stream.end"})
        await c.send({"type": "stream.start", "format": "pcm16"})
        assert (await c.next("error", 6))["code"] == "quota_exceeded"

        # the LiveStarts the gateway published: the contract model, one per stream
        js = nc.jetstream()
        sub = await js.subscribe(subjects.INGEST_LIVE.for_workspace(WS_A),
                                 stream=subjects.STREAM_INGEST, ordered_consumer=True)
        starts = [LiveStart.model_validate_json((await sub.next_msg(timeout=10)).data)
                  for _ in range(6)]
        await sub.unsubscribe()
        assert {s.stream_id for s in starts} == {
            b_started["stream_id"], a_started["stream_id"], c_started["stream_id"],
            idle["stream_id"], bad["stream_id"], last["stream_id"]}
        assert {s.session_id for s in starts} == {"a", "b", "c"}
        # stream.ended is the transcribe stage's (none runs here), never the gateway's
        assert not [m for r in (a.reader, b.reader, c.reader) for m in r.of_type("stream.ended")]
        for reader in (a.reader, b.reader, c.reader):
            await reader.__aexit__()
        await b.ws.close()
        await c.ws.close()
