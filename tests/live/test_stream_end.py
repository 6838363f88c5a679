"""The end of a live stream, end to end on real servers and the real model: the transcribe
stage publishes one ``LiveEnded`` (``mumu.stream.ended.<ws>``) per stream after its
last final, also for a stream that had none, and exactly once even when the stream's start
is handled a second time (what a replica that takes the stream over does); the websocket
client gets it as ``stream.ended``, and a Realtime session without turn detection whose
commit follows silence completes its item at it, at once (before it, the gateway guessed
the end and waited 15 s here). One pipeline for the module's test."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.consumers import TRANSCRIBE_LIVE
from mumu.contracts.events import LiveEnded, new_id
from mumu.settings import Settings
from tests.conftest import Ensure
from tests.gateway.conftest import gateway_settings, serving
from tests.gateway.pipeline import pipeline_settings, stages
from tests.gateway.test_realtime import (
    COMPLETED,
    append,
    at_24k,
    of,
    realtime_client,
    transcription_session,
    until,
)
from tests.live.ws_live import Reader, clip, live_settings, noise, pcm16, send_paced
from tests.pg_fixtures import WorkspaceFactory
from tests.text import words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def markers(nc: NATS, workspace: str) -> list[LiveEnded]:
    """Every ``LiveEnded`` of the workspace stored in ``MUMU_RESULTS``."""
    js = nc.jetstream()
    subject = subjects.STREAM_ENDED.for_workspace(workspace)
    pending = (await js.stream_info(subjects.STREAM_RESULTS, subjects_filter=subject)).state
    count = (pending.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, stream=subjects.STREAM_RESULTS, ordered_consumer=True)
    try:
        return [LiveEnded.model_validate_json((await sub.next_msg(timeout=10)).data)
                for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def handled_again(nc: NATS, workspace: str, stream_id: str) -> None:
    """Deliver the stream's ``LiveStart`` to the transcribe stage once more (a replay to the
    stage, as a takeover redelivers it) and wait until the stage has acked it."""
    js = nc.jetstream()
    sub = await js.subscribe(subjects.INGEST_LIVE.for_workspace(workspace),
                             stream=subjects.STREAM_INGEST, ordered_consumer=True)
    try:
        while True:
            start: Msg = await sub.next_msg(timeout=10)
            if json.loads(start.data)["stream_id"] == stream_id:
                break
    finally:
        await sub.unsubscribe()
    ack = await js.publish(
        TRANSCRIBE_LIVE.replay.for_workspace(workspace), start.data,
        headers={h.MSG_ID: new_id(), h.REPLAY: "test", h.REPLAY_SUBJECT: start.subject})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = await js.consumer_info(subjects.STREAM_INGEST, TRANSCRIBE_LIVE.durable)
        if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the stage did not handle the replayed LiveStart within 60 s")


async def test_every_live_stream_ends_with_one_marker_after_its_last_final(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, workspaces: Ensure, tmp_path: Path,
) -> None:
    models = tmp_path.parent / "models"
    cfg = live_settings(gateway_settings(pipeline_settings(settings, models),
                                         wait_timeout=120.0))
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    ws_id, api_key = await workspace("stream-end")
    await workspaces(ws_id)  # its intake stream, and the broker's users know it
    finals: list[dict[str, Any]] = []

    async def on_final(msg: Msg) -> None:
        finals.append(json.loads(msg.data))

    sub = await nc.subscribe(subjects.TRANSCRIPT_FINAL.for_workspace(ws_id), cb=on_final)
    async with stages(cfg, reason=False), serving(cfg) as gw, aiohttp.ClientSession() as http:
        # 1. Realtime, no turn detection: speech, then silence the stage endpoints (its
        # final is out before the commit), then the commit: the item completes at once
        client = realtime_client(gw, api_key, max_retries=0)
        async with transcription_session(client) as conn:
            seen: list[dict[str, Any]] = []
            await conn.transcription_session.update(session={
                "turn_detection": None,
                "input_audio_transcription": {"model": "whisper-1", "language": "en"}})
            await until(conn, seen, lambda s: of(s, "transcription_session.updated"))
            await append(conn, at_24k(np.concatenate(
                [noise(0.3), clip("en01.wav"), noise(2.5, 6)])), pace=4.0)
            deadline = time.monotonic() + 90
            while not finals and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert finals, "the stage did not endpoint the utterance"
            committed_at = time.monotonic()
            await conn.input_audio_buffer.commit()
            await until(conn, seen, lambda s: of(s, COMPLETED), 30)
            took = time.monotonic() - committed_at
            item = of(seen, COMPLETED)[0]
            assert words(item["transcript"])[:4] == ["the", "quick", "brown", "fox"]
            assert took < 5.0, f"the item completed {took:.1f} s after the commit"
            assert [e["type"] for e in seen].count(COMPLETED) == 1
        [realtime_end] = await markers(nc, ws_id)
        assert (realtime_end.utterances, realtime_end.reason) == (1, "end")
        assert realtime_end.stream_id == finals[0]["stream_id"]

        # 2. the websocket: a stream of silence ends with stream.ended, without a final
        async with http.post(f"{gw.url}/api/session",
                             headers={"Authorization": f"Bearer {api_key}"}) as resp:
            token = (await resp.json())["token"]
        async with http.ws_connect(gw.ws_url(token)) as ws, Reader(ws) as reader:
            await reader.wait(lambda _: reader.of_type("ready"))
            await ws.send_json({"type": "stream.start", "format": "pcm16"})
            await reader.wait(lambda _: reader.of_type("stream.started"), 20)
            sid = reader.of_type("stream.started")[0]["stream_id"]
            await send_paced(ws, pcm16(noise(2.0, 7)), pace=4.0)
            await ws.send_json({"type": "stream.end"})
            await reader.wait(lambda _: reader.of_type("stream.ended"), 30)
            [ended] = reader.of_type("stream.ended")
            assert (ended["stream_id"], ended["reason"], ended["utterances"],
                    ended["seconds"]) == (sid, "end", 0, 2.0)
            assert ended["cursor"] > 0  # a stored event: a resuming client gets it too
            assert not [m for m in reader.messages if m.get("stream_id") == sid
                        and m["type"] in ("transcript.partial", "transcript.final")]

            # 3. the stream's start handled again (a takeover replays the stream):
            # its marker is not published a second time
            await handled_again(nc, ws_id, sid)
            got = await markers(nc, ws_id)
            assert sorted(m.stream_id for m in got) == sorted([realtime_end.stream_id, sid])
            assert len(reader.of_type("stream.ended")) == 1
    await sub.unsubscribe()
    assert len(finals) == 1
