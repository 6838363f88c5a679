"""``/v1/realtime`` at the gateway on a real nats-server and PostgreSQL (no model): the
handshake's refusals, the 24 kHz audio resampled to 16 kHz chunks of one live stream, a
commit ending it, and a stream left without audio ended by the idle timeout."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart
from mumu.settings import Settings
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.test_ws_live_input import assert_numbered
from tests.pg_fixtures import WorkspaceFactory

pytestmark = pytest.mark.timeout(120)


async def events(ws: aiohttp.ClientWebSocketResponse, until: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while not got or got[-1]["type"] != until:
        got.append(json.loads((await ws.receive(timeout=20)).data))
    return got


async def stream_chunks(nc: NATS, workspace: str) -> list[tuple[LiveStart, list[Any]]]:
    """Each live stream of the workspace and its chunks (headers, bytes)."""
    js = nc.jetstream()
    sub = await js.subscribe(subjects.INGEST_LIVE.for_workspace(workspace),
                             stream=subjects.STREAM_INGEST, ordered_consumer=True)
    starts = []
    while True:
        try:
            starts.append(LiveStart.model_validate_json((await sub.next_msg(timeout=1)).data))
        except TimeoutError:
            break
    await sub.unsubscribe()
    out = []
    for start in starts:
        sub = await js.subscribe(subjects.live_chunk(start.stream_id, workspace),
                                 stream=subjects.STREAM_INGEST, ordered_consumer=True)
        got: list[Any] = []
        while not got or got[-1][0].get(h.STREAM_END) != "true":
            msg = await sub.next_msg(timeout=10)
            got.append((dict(msg.headers or {}), msg.data))
        await sub.unsubscribe()
        out.append((start, got))
    return out


async def test_realtime_audio_becomes_a_live_stream_and_idle_streams_end(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    cfg = gateway_settings(settings, stream_idle_timeout=1.0)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    ws_id, api_key = await workspace("realtime-input")
    auth = {"Authorization": f"Bearer {api_key}"}
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        url = "ws" + gw.url.removeprefix("http") + "/v1/realtime"
        for query, headers, status in [("", auth, 400), ("?intent=transcription", {}, 401),
                                       ("?intent=transcription",
                                        {"Authorization": "Bearer mumu_nope"}, 401)]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + query, headers=headers)
            assert refused.value.status == status
        async with http.ws_connect(url + "?intent=transcription", headers=auth) as ws:
            created = await events(ws, "session.created")
            assert created[0]["session"]["audio"]["input"]["format"]["rate"] == 24_000
            tone = (np.sin(np.arange(24_000) * 2 * np.pi * 440 / 24_000) * 8000).astype("<i2")
            for part in np.array_split(tone, 10):  # 1 s at 24 kHz in 100 ms appends
                await ws.send_json({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(part.tobytes()).decode()})
            await ws.send_json({"type": "input_audio_buffer.commit"})
            # then a stream that gets 0.1 s and nothing more: ended after 1 s
            await ws.send_json({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(tone[:2400].tobytes()).decode()})
            timed_out = (await events(ws, "error"))[-1]["error"]
            assert timed_out["code"] == "stream_timeout"
            await ws.send_json({"type": "input_audio_buffer.commit"})  # nothing to commit
            empty = (await events(ws, "error"))[-1]["error"]
            assert empty["code"] == "input_audio_buffer_commit_empty"
    (first, chunks), (second, idle) = await stream_chunks(nc, ws_id)
    assert first.session_id == second.session_id and first.session_id.startswith("rt-")
    assert first.options.answer is False  # transcription only
    assert_numbered(chunks)
    pcm = np.frombuffer(b"".join(data for _, data in chunks), "<i2")
    assert abs(pcm.size - 16_000) <= 32  # 1 s at 16 kHz (the resampler's edge aside)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float32)))
    assert abs(np.argmax(spectrum) * 16_000 / pcm.size - 440) < 5  # the same tone
    assert_numbered(idle)
    assert abs(sum(len(d) for _, d in idle) - 3200) <= 64  # 0.1 s
