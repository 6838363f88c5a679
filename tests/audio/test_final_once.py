"""Exactly one transcript final when the transcribe stage dies after publishing it and the
audio is redelivered after the results stream's dedupe window (real model, real audio)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from mumu.contracts import subjects
from mumu.contracts.events import AudioReady, TranscriptFinal
from mumu.stages.transcribe.stage import TranscribeStage
from tests.audio.conftest import SPEECH, publish_audio
from tests.audio.test_audio_deleted import CONSUMER, Stages
from tests.harness import Collector
from tests.runtime.test_once import _short_dedupe_window


async def test_a_transcription_redelivered_after_the_dedupe_window_has_one_final(
    nc: NATS, pipeline: Stages, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _short_dedupe_window(nc)  # 1 s instead of 120 s
    _, transcribe = pipeline
    delete, died = TranscribeStage._delete, list[str]()  # noqa: SLF001

    async def die_before_the_ack(store: ObjectStore, ready: AudioReady) -> None:
        """The final is published (and recorded); the process dies before the audio is
        deleted and the input acked."""
        if not died:
            died.append(ready.request_id)
            assert transcribe._ctx is not None  # noqa: SLF001
            await transcribe._ctx.nc.close()  # noqa: SLF001 - dying: the connection is gone
            return
        await delete(store, ready)

    monkeypatch.setattr(TranscribeStage, "_delete", staticmethod(die_before_the_ack))
    js = nc.jetstream()
    async with Collector(nc, "mumu.transcript.final.>") as client:
        rid = await publish_audio(nc, (SPEECH / "en01.wav").read_bytes())
        await client.wait_count("mumu.transcript.final.", 1, timeout=90)
        async with asyncio.timeout(120):  # redelivered after ack_wait (10 s), transcribed again
            while not died or (await js.consumer_info(
                    subjects.STREAM_AUDIO, CONSUMER)).num_ack_pending:
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a second final would be on its way by now
    assert died == [rid]
    finals = [TranscriptFinal.model_validate_json(m.data) for m in client.on("mumu.transcript.")]
    assert [f.request_id for f in finals] == [rid]
    stored = await js.stream_info(subjects.STREAM_RESULTS,
                                  subjects_filter=subjects.TRANSCRIPT_FINAL.wildcard)
    assert sum((stored.state.subjects or {}).values()) == 1
    info = await js.consumer_info(subjects.STREAM_AUDIO, CONSUMER)
    assert info.delivered.consumer_seq == 2  # one message, delivered twice
    assert info.ack_floor.stream_seq == 1
