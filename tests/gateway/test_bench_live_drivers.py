"""The two drivers of `mumu bench live`, without the model (real nats-server, real gateway):

- the websocket driver streams through the gateway (its chunks and ``LiveStart`` land in
  JetStream with the stream's options), uploads with ``POST /api/ask``, and hands each
  result of its sessions, as the gateway sends it, to ``on_event`` with the time it was
  read, and none of another session's;
- the NATS driver, on the benchmark's broker (users, no anonymous access), does both with
  a workspace producer's credentials alone, and gets its results by subscription.

The whole benchmark, with the model, is ``tests/live/test_bench_live.py``."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.bench.live_gateway import broker, driver
from mumu.bench.live_ws import WsLiveDriver
from mumu.broker.connect import connect
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, Gateway, Results, gateway_settings, serving
from tests.gateway.test_ws_live_input import assert_numbered, chunks

pytestmark = pytest.mark.timeout(60)
FRAME = bytes(range(256)) * 12 + bytes(128)  # 100 ms of PCM16 (3200 bytes)
Got = list[tuple[str, dict[str, Any], float]]


def wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(bytes(int(seconds * 32_000)))
    return out.getvalue()


async def until(got: Got, count: int) -> None:
    async with asyncio.timeout(10):
        while len(got) < count:
            await asyncio.sleep(0.02)


async def first_message(nc: NATS, subject: str) -> Any:
    sub = await nc.jetstream().subscribe(subject, stream=subjects.STREAM_INGEST,
                                         ordered_consumer=True)
    try:
        return await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()


@pytest.fixture
async def gw(nc: NATS, streams: None, settings: Settings) -> AsyncIterator[Gateway]:
    cfg = gateway_settings(settings)  # as the benchmark runs it: no quotas
    cfg = cfg.model_copy(update={"quota": cfg.quota.model_copy(update={"enabled": False})})
    async with serving(cfg) as gateway:
        yield gateway


async def test_the_websocket_driver_goes_through_the_gateway(
    nc: NATS, gw: Gateway, results: Results,
) -> None:
    got: Got = []
    async with aiohttp.ClientSession() as http:
        ws = WsLiveDriver(http, gw.url, lambda session: gw.token(WS_A, session),
                          lambda kind, body, at: got.append((kind, body, at)))
        stream = await ws.open("bench-s", AudioOptions(language="en", word_timestamps=True,
                                                       answer=False))
        await stream.send(FRAME)
        await stream.end(FRAME)
        ended = time.monotonic()
        rid = f"{stream.request_id}-0"
        await results.partial(WS_A, "other", "elsewhere-0", 0, "another session's")
        await results.partial(WS_A, "bench-s", rid, 0, "hello")
        await results.transcript(WS_A, "bench-s", rid, "hello there")
        await results.delta(WS_A, "bench-s", rid, 0, "Hi")
        await results.final(WS_A, "bench-s", rid, "Hi!")
        await until(got, 4)

        up = await ws.upload("bench-u", wav(0.5), AudioOptions(language="en"))
        await results.transcript(WS_A, "bench-u", up.request_id, "uploaded")
        await until(got, 5)
        await ws.release("bench-s")
        await ws.close()
    assert [(kind, body["request_id"]) for kind, body, _ in got] == [
        ("partial", rid), ("final", rid), ("delta", rid), ("answer", rid),
        ("final", up.request_id)]
    assert [body["text"] for kind, body, _ in got if kind == "final"] == [
        "hello there", "uploaded"]
    assert all(at > ended for _, _, at in got[:4])  # read after the end went out
    assert [at for _, _, at in got] == sorted(at for _, _, at in got)
    assert ws.frames_sent == 2

    start = LiveStart.model_validate_json(
        (await first_message(nc, subjects.INGEST_LIVE.for_workspace(WS_A))).data)
    assert start.request_id == stream.request_id
    assert (start.options.word_timestamps, start.options.answer) == (True, False)
    got_chunks = await chunks(nc, start.stream_id)
    assert_numbered(got_chunks)
    assert b"".join(data for _, data in got_chunks) == FRAME * 2
    asked = await first_message(nc, subjects.INGEST_AUDIO.for_workspace(WS_A))
    headers = asked.headers or {}
    assert (headers[h.REQUEST_ID], headers[h.SESSION], headers[h.LANGUAGE]) == (
        up.request_id, "bench-u", "en")
    assert asked.data == wav(0.5)


async def test_the_nats_driver_needs_only_a_producers_credentials(tmp_path: Path) -> None:
    workspace = "bench-live"
    got: Got = []
    async with broker(tmp_path, workspace) as on:
        operator = await connect(on.nats, name="test-bench-operator")
        try:
            await apply_all(operator)
            await ensure_workspace(operator, workspace)
            async with driver(on, workspace, lambda k, b, at: got.append((k, b, at)),
                              None) as producer:
                stream = await producer.open("bench-s", AudioOptions(language="en"))
                await stream.send(FRAME)
                await stream.end(FRAME)
                up = await producer.upload("bench-u", wav(0.2), AudioOptions(language="en"))
                # a result on the workspace's subject, as a stage publishes it
                await operator.publish(
                    subjects.TRANSCRIPT_FINAL.for_workspace(workspace),
                    b'{"request_id": "%s", "text": "uploaded"}' % up.request_id.encode())
                await until(got, 1)
            asked = await first_message(operator, subjects.INGEST_AUDIO.for_workspace(workspace))
            chunk_sub = await operator.jetstream().subscribe(
                f"{subjects.LIVE_CHUNK_PREFIX}.*.{workspace}", stream=subjects.STREAM_INGEST,
                ordered_consumer=True)
            sent = [(await chunk_sub.next_msg(timeout=10)).data for _ in range(2)]
            await chunk_sub.unsubscribe()
        finally:
            await operator.drain()
    assert producer.name == "nats"
    assert [(kind, body["request_id"]) for kind, body, _ in got] == [("final", up.request_id)]
    assert (asked.headers or {})[h.REQUEST_ID] == up.request_id
    assert sent == [FRAME, FRAME]
