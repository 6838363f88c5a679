"""A websocket live stream on a gateway without quotas (``MUMU_QUOTA__ENABLED=false``, as
`mumu bench live` runs it): no longest audio, so every frame goes out as chunks and the
socket stays open (it used to be closed: ``int(inf)`` in the room left), and
``word_timestamps`` of ``stream.start`` reaches the stream's options. Real nats-server,
no model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, Gateway, gateway_settings, serving
from tests.gateway.test_ws_live_input import assert_numbered, chunks
from tests.live.ws_live import Reader

pytestmark = pytest.mark.timeout(60)
SECOND = 32_000  # bytes of 16 kHz PCM16


@pytest.fixture
async def gw(nc: NATS, streams: None, settings: Settings) -> AsyncIterator[Gateway]:
    cfg = gateway_settings(settings)
    cfg = cfg.model_copy(update={"quota": cfg.quota.model_copy(update={"enabled": False})})
    async with serving(cfg) as gateway:
        yield gateway


async def test_a_stream_without_quotas_is_published_whole(nc: NATS, gw: Gateway) -> None:
    audio = bytes(range(256)) * (3 * SECOND // 256)  # 3 s, in 100 ms frames
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(gw.ws_url(gw.token(WS_A, "free"))) as ws, Reader(ws) as reader:
        await reader.wait(lambda _: reader.of_type("ready"))
        await ws.send_json({"type": "stream.start", "format": "pcm16", "sample_rate": 16000,
                            "language": "en", "word_timestamps": True, "answer": False})
        await reader.wait(lambda _: reader.of_type("stream.started") or reader.of_type("error"))
        started = reader.of_type("stream.started")[0]
        for at in range(0, len(audio), SECOND // 10):
            await ws.send_bytes(audio[at:at + SECOND // 10])
        await ws.send_json({"type": "stream.end"})
        got = await chunks(nc, started["stream_id"])  # up to the chunk that ends it
        # the socket is still open and answering (``stream.ended`` is the transcribe
        # stage's, and no stage runs here)
        await ws.send_json({"type": "ping"})
        await reader.wait(lambda _: reader.of_type("pong"), 20)
        assert reader.of_type("error") == []
        assert not ws.closed
    assert_numbered(got)
    assert b"".join(data for _, data in got) == audio
    sub = await nc.jetstream().subscribe(subjects.INGEST_LIVE.for_workspace(WS_A),
                                         stream=subjects.STREAM_INGEST, ordered_consumer=True)
    start = LiveStart.model_validate_json((await sub.next_msg(timeout=10)).data)
    await sub.unsubscribe()
    assert start.stream_id == started["stream_id"]
    assert (start.options.word_timestamps, start.options.answer) == (True, False)
