"""Normalised audio is held per workspace (``mumu-audio-<ws>``): a workspace filling its
bucket is refused at its own limit, and another workspace's audio is still transcribed."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AudioReady, TranscriptFinal, new_id
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.audio.conftest import SPEECH
from tests.conftest import provision
from tests.harness import Collector, running

WS_A, WS_B = "ws-loud", "ws-quiet"
ROOM = 200_000
"""A's audio bucket: one 4 s clip (16 kHz mono, 128 KB) fits, a second does not."""


async def send(nc: NATS, ws: str, clip: bytes) -> str:
    """A producer's audio ask (the workspace is provisioned already)."""
    rid = new_id()
    await nc.jetstream().publish(subjects.INGEST_AUDIO.for_workspace(ws), clip, headers={
        h.CONTENT_TYPE: "audio/wav", h.SESSION: "s1", h.REQUEST_ID: rid,
        h.MSG_ID: f"{ws}.{rid}"})
    return rid


async def test_a_workspace_filling_its_audio_bucket_is_refused_and_another_is_transcribed(
    nc: NATS, streams: None, audio_settings: Settings
) -> None:
    await provision(nc, WS_A)
    await provision(nc, WS_B)
    await ensure_workspace(nc, WS_A, audio_max_bytes=ROOM)
    clip = (SPEECH / "en01.wav").read_bytes()
    async with Collector(nc) as seen:
        # transcribe is not running yet: A's audio waits in A's bucket, which fills
        async with running(build_ingest(audio_settings), audio_settings):
            flood = [await send(nc, WS_A, clip) for _ in range(3)]
            letters = await seen.wait_count(subjects.DLQ.stage("ingest").prefix, 2, timeout=60)
            other = await send(nc, WS_B, clip)
            await seen.wait_for(lambda _: any(
                AudioReady.model_validate_json(m.data).request_id == other
                for m in seen.on(subjects.AUDIO_READY.for_workspace(WS_B))), timeout=60)
        assert all("maximum bytes" in m.headers[h.DLQ_REASON] for m in letters)
        ready_a = seen.on(subjects.AUDIO_READY.for_workspace(WS_A))
        assert len(ready_a) == 1 and len(flood) == 3  # stopped at its own limit
        store = await nc.jetstream().object_store(subjects.audio_bucket(WS_A))
        assert (await store.status()).size <= ROOM
        with pytest.raises(nats.js.errors.NotFoundError):  # nothing went to the shared one
            await (await nc.jetstream().object_store(subjects.BUCKET_AUDIO)).get_info(
                AudioReady.model_validate_json(ready_a[0].data).object_name)
        async with running(build_transcribe(audio_settings), audio_settings):
            finals = await seen.wait_count(subjects.TRANSCRIPT_FINAL.prefix, 2, timeout=120)
    done = {TranscriptFinal.model_validate_json(m.data).request_id for m in finals}
    assert other in done
    assert (await store.status()).size < ROOM // 10  # transcribed audio is deleted
