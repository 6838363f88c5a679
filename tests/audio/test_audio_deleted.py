"""Normalised audio is deleted once it is transcribed; a later delivery of the same
request is done already, and audio that is simply gone is a dead letter."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AudioReady, TranscriptFinal, new_id
from mumu.stages.ingest.stage import IngestStage, normalised_object
from mumu.stages.transcribe.stage import TranscribeStage
from tests.audio.conftest import SPEECH, WS, publish_audio
from tests.conftest import provision
from tests.harness import Collector

Stages = tuple[IngestStage, TranscribeStage]
CONSUMER = "transcribe-audio"


async def acked_up_to(nc: NATS, sequence: int) -> None:
    """Until the transcribe consumer's ack floor reaches ``sequence`` of MUMU_AUDIO."""
    js = nc.jetstream()
    async with asyncio.timeout(30):
        while (await js.consumer_info(subjects.STREAM_AUDIO, CONSUMER)).ack_floor.stream_seq < sequence:
            await asyncio.sleep(0.05)  # polls the server's state; the bound is the timeout


async def test_the_normalised_audio_is_deleted_after_its_final_and_a_redelivery_is_done(
    nc: NATS, pipeline: Stages
) -> None:
    js = nc.jetstream()
    bucket = subjects.audio_bucket(WS)  # the workspace's own, not the shared mumu-audio
    async with Collector(nc) as seen:
        rid = await publish_audio(nc, (SPEECH / "en01.wav").read_bytes())
        store = await js.object_store(bucket)  # made with the workspace
        (final,) = await seen.wait_count("mumu.transcript.final.", 1, timeout=90)
        assert TranscriptFinal.model_validate_json(final.data).request_id == rid
        (ready_msg,) = seen.on("mumu.audio.ready.")
        ready = AudioReady.model_validate_json(ready_msg.data)
        assert ready.object_name == normalised_object(WS, rid)
        await acked_up_to(nc, 1)  # the audio is deleted before the input is acked

        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await store.get(ready.object_name)
        marker = await store.get_info(ready.object_name, show_deleted=True)
        assert marker.deleted and marker.size == 0
        chunks = await js.stream_info(
            f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
        assert not chunks.state.subjects, "no audio chunk is left in the bucket"
        assert chunks.state.messages == 1  # only the delete marker (a name, no audio)

        # the same request again (a replay, or a redelivery after a lost ack)
        await js.publish(ready_msg.subject, ready_msg.data, headers={h.MSG_ID: "again-" + rid})
        await acked_up_to(nc, 2)
    assert len(seen.on("mumu.transcript.final.")) == 1, "done already: no second final"
    assert seen.on("mumu.dlq.") == [] and seen.on("mumu.error.") == []


async def test_audio_that_is_gone_without_a_final_is_a_dead_letter(
    nc: NATS, pipeline: Stages
) -> None:
    js = nc.jetstream()
    await provision(nc, WS)  # a workspace whose audio bucket exists, without this object
    rid = new_id()
    ready = AudioReady(
        event_id=new_id(), request_id=rid, workspace_id=WS, session_id="sess-1",
        object_name=normalised_object(WS, rid), duration=1.0, sample_rate=16_000,
        source_content_type="audio/wav",
    )
    async with Collector(nc) as seen:
        await js.publish(subjects.AUDIO_READY.for_workspace(WS), ready.model_dump_json().encode(),
                         headers={h.MSG_ID: ready.event_id})
        (letter,) = await seen.wait_count("mumu.dlq.transcribe", 1, timeout=30)
    assert letter.headers[h.DLQ_CODE] == "transcribe_failed"
    assert "gone" in letter.headers[h.DLQ_REASON]
    assert seen.on("mumu.transcript.final.") == []
