"""Cross-request micro-batching: requests arriving together are decoded together."""

from __future__ import annotations

import asyncio
from typing import Any

import jiwer
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts.events import Segment, TranscriptFinal, TranscriptPartial
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.batch_decode import plan
from mumu.stages.transcribe.engine import Job, transcribe_kwargs, wav_to_float
from mumu.stages.transcribe.stage import TranscribeStage
from mumu.stages.transcribe.transcriber import build_transcriber
from tests.audio.conftest import DATA, SPEECH, publish_audio, references, words
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


# the option a request changes, and the value it changes it to (every option the engine
# hands to the model; ``answer`` is the reason stage's, ``word_timestamps`` is never batched)
CHANGED = {"language": "de", "task": "translate", "prompt": "Kathryn Nguyen", "vad": True,
           "beam_size": 3}


def test_every_option_the_engine_hands_the_model_changes_the_batched_decode() -> None:
    default = AudioOptions()
    assert set(CHANGED) | {"answer", "word_timestamps"} == set(AudioOptions.model_fields)
    for name, value in CHANGED.items():
        changed = default.model_copy(update={name: value})
        assert transcribe_kwargs(changed) != transcribe_kwargs(default), name
        assert plan(changed) != plan(default), f"the batched decode ignores {name}"
    p = plan(AudioOptions(**CHANGED))
    assert (p.language, p.task, p.vad) == ("de", "translate", True)
    assert dict(p.decoding) == {"initial_prompt": "Kathryn Nguyen", "beam_size": 3}
    with pytest.raises(ValueError, match="word timestamps"):
        plan(AudioOptions(word_timestamps=True))


async def test_the_batched_decode_uses_each_requests_prompt_language_and_task(
    audio_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faster_whisper import BatchedInferencePipeline

    seen: list[tuple[str, str, str | None, int]] = []
    forward = BatchedInferencePipeline.forward

    def recorded(self: Any, features: Any, tokenizer: Any, meta: Any, options: Any) -> Any:
        task = "translate" if tokenizer.task == tokenizer.translate else "transcribe"
        seen.append((tokenizer.language_code, task, options.initial_prompt, options.beam_size))
        return forward(self, features, tokenizer, meta, options)

    monkeypatch.setattr(BatchedInferencePipeline, "forward", recorded)
    s = audio_settings.transcribe.model_copy(update={"batch_window_ms": 400.0, "max_batch": 4})
    sizes: list[int] = []
    batcher = build_transcriber(s, audio_settings.data_dir, on_batch=sizes.append)
    name = wav_to_float((DATA / "options" / "name.wav").read_bytes())  # "... Kathryn Nguyen"
    german = wav_to_float((SPEECH / "de01.wav").read_bytes())

    async def nothing(segment: Segment, language: str) -> None:
        return None

    await batcher.start()
    try:
        prompted, unprompted, translated = await asyncio.gather(
            batcher.transcribe(Job(name, AudioOptions(prompt="Kathryn Nguyen", beam_size=3)),
                               nothing),
            batcher.transcribe(Job(name, AudioOptions()), nothing),
            batcher.transcribe(Job(german, AudioOptions(language="de", task="translate")),
                               nothing),
        )
    finally:
        await batcher.stop()
    assert sizes == [3]  # one micro-batch, three decoding plans
    assert sorted(seen, key=str) == sorted([
        ("en", "transcribe", "Kathryn Nguyen", 3), ("en", "transcribe", None, 5),
        ("de", "translate", None, 5)], key=str)
    assert "kathryn" in words(prompted.text)
    assert "kathryn" not in words(unprompted.text)  # Whisper base hears "Catherine"
    assert (unprompted.language, translated.language) == ("en", "de")
    assert translated.language_probability == 1.0  # given, not detected
    assert "morning" in words(translated.text) and "guten" not in words(translated.text)
