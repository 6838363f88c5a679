"""Cross-request micro-batching: requests arriving together are decoded together."""

from __future__ import annotations

import jiwer
from nats.aio.client import Client as NATS

from mumu.contracts.events import TranscriptFinal, TranscriptPartial
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.stage import TranscribeStage
from mumu.stages.transcribe.transcriber import build_transcriber
from tests.audio.conftest import SPEECH, publish_audio, references, words
from tests.harness import Collector, running


async def test_requests_in_one_window_are_batched_and_transcribed_correctly(
    nc: NATS, streams: None, audio_settings: Settings
) -> None:
    batched = audio_settings.model_copy(update={"transcribe": audio_settings.transcribe.model_copy(
        update={"batch_window_ms": 400.0, "max_batch": 4})})
    sizes: list[int] = []  # the batcher reports each batch it runs (it keeps none itself)
    transcribe = TranscribeStage(batched.transcribe, build_transcriber(
        batched.transcribe, batched.data_dir, on_batch=sizes.append))
    refs = references()
    clips = ["en02.wav", "en03.wav", "en06.wav", "de01.wav"]
    async with (running(build_ingest(batched), batched), running(transcribe, batched),
                Collector(nc) as seen):
        sent = {await publish_audio(nc, (SPEECH / c).read_bytes()): c for c in clips}
        await seen.wait_count("mumu.transcript.final.", len(clips), timeout=90)
    assert max(sizes) >= 2, sizes
    assert sum(sizes) == len(clips)
    partial_ids = {TranscriptPartial.model_validate_json(m.data).request_id
                   for m in seen.on("mumu.transcript.partial.")}
    assert partial_ids == set(sent)
    for m in seen.on("mumu.transcript.final."):
        final = TranscriptFinal.model_validate_json(m.data)
        ref = refs[sent[final.request_id]]
        assert final.language == ref["language"]
        assert final.segments
        assert final.segments[-1].end <= final.duration + 0.01
        if ref["language"] == "en":
            assert jiwer.wer(words(ref["text"]), words(final.text)) <= 0.15
