"""Audio in, transcript out: ingest + transcribe with the real model on a real nats-server."""

from __future__ import annotations

import io
import wave
from collections import Counter
from typing import Any

import av
import jiwer
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import (
    AudioReady,
    PipelineError,
    TranscriptFinal,
    TranscriptPartial,
)
from mumu.contracts.options import OPTION_HEADERS
from mumu.settings import Settings
from mumu.stages.ingest.stage import IngestStage
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.transcribe.stage import TranscribeStage
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.audio.conftest import DATA, SPEECH, WS, Upload, publish_audio, references, words
from tests.harness import Collector, Seen, running

Stages = tuple[IngestStage, TranscribeStage]


def finals(seen: Collector) -> dict[str, TranscriptFinal]:
    """The final of each request; fails when a request got more than one."""
    out = [TranscriptFinal.model_validate_json(m.data) for m in seen.on("mumu.transcript.final.")]
    counts = Counter(f.request_id for f in out)
    assert set(counts.values()) <= {1}, f"more than one final: {counts}"
    return {f.request_id: f for f in out}


def dead_letter_codes(seen: Collector, stage: str) -> dict[str, str]:
    """request id → code of each dead letter of ``stage`` (one per request)."""
    letters = seen.on(f"mumu.dlq.{stage}")
    rid_header = h.DLQ_ORIGINAL_PREFIX + h.REQUEST_ID  # ingest: the producer's headers
    codes = {  # transcribe: the body is the AudioReady event
        m.headers.get(rid_header) or AudioReady.model_validate_json(m.data).request_id:
        m.headers[h.DLQ_CODE] for m in letters
    }
    assert len(codes) == len(letters), "a request was dead-lettered twice"
    return codes


def partials_of(seen: Collector, request_id: str) -> list[tuple[int, TranscriptPartial]]:
    """(position among everything seen, partial) of one request."""
    return [
        (i, p) for i, m in enumerate(seen.messages)
        if m.subject.startswith("mumu.transcript.partial.")
        for p in [TranscriptPartial.model_validate_json(m.data)] if p.request_id == request_id
    ]


def position_of_final(seen: Collector, request_id: str) -> int:
    return next(
        i for i, m in enumerate(seen.messages)
        if m.subject.startswith("mumu.transcript.final.")
        and TranscriptFinal.model_validate_json(m.data).request_id == request_id
    )


async def wait_finals(seen: Collector, count: int, timeout: float) -> list[Seen]:
    return await seen.wait_count("mumu.transcript.final.", count, timeout=timeout)


async def test_english_clips_stream_partials_then_a_final_within_the_wer_bound(
    nc: NATS, pipeline: Stages
) -> None:
    refs = {k: v for k, v in references().items() if v["language"] == "en" and k != "long_en.flac"}
    assert len(refs) >= 8
    async with Collector(nc) as seen:
        sent = {await publish_audio(nc, (SPEECH / name).read_bytes()): name for name in refs}
        await wait_finals(seen, len(sent), timeout=120)
    got = finals(seen)
    assert set(got) == set(sent)
    hyps, truths = [], []
    for rid, name in sent.items():
        final = got[rid]
        parts = partials_of(seen, rid)
        assert parts, f"{name}: no transcript.partial before the final"
        assert max(i for i, _ in parts) < position_of_final(seen, rid)
        assert [p.segment.id for _, p in parts] == [s.id for s in final.segments]
        assert final.language == "en"
        assert final.model == "base"
        assert final.compute_seconds > 0
        assert 3.5 < final.duration < 6
        assert final.workspace_id == WS
        assert final.session_id == "sess-1"
        hyps.append(words(final.text))
        truths.append(words(refs[name]["text"]))
    error = jiwer.wer(truths, hyps)
    assert error <= 0.15, f"WER {error:.3f}: {list(zip(truths, hyps, strict=True))}"
    assert not seen.on("mumu.error.")


async def test_language_detection_names_german_and_french(nc: NATS, pipeline: Stages) -> None:
    others = {k: v for k, v in references().items() if v["language"] != "en"}
    assert {v["language"] for v in others.values()} == {"de", "fr"}
    async with Collector(nc) as seen:
        sent = {await publish_audio(nc, (SPEECH / name).read_bytes()): name for name in others}
        await wait_finals(seen, len(sent), timeout=60)
    got = finals(seen)
    assert set(got) == set(sent)
    for rid, final in got.items():
        assert final.language == others[sent[rid]]["language"]
        assert final.language_probability > 0.3
        parts = partials_of(seen, rid)
        assert parts, f"{sent[rid]}: no partials"
        assert all(p.language == final.language for _, p in parts)


async def test_per_request_options_word_timestamps_and_forced_language(
    nc: NATS, pipeline: Stages
) -> None:
    audio = (SPEECH / "en05.wav").read_bytes()
    async with Collector(nc) as seen:
        rid = await publish_audio(nc, audio, extra={
            h.WORD_TIMESTAMPS: "true", h.LANGUAGE: "en", h.BEAM_SIZE: "2",
        })
        plain = await publish_audio(nc, audio)
        await wait_finals(seen, 2, timeout=60)
    final = finals(seen)[rid]
    assert final.language_probability == 1.0  # given, not detected
    assert finals(seen)[plain].language_probability < 1.0
    assert finals(seen)[plain].segments[0].words is None
    segment_words = [w for s in final.segments for w in s.words or []]
    assert len(segment_words) >= 8
    assert all(w.start <= w.end for w in segment_words)
    assert segment_words[-1].end <= final.duration + 0.01
    assert "capital" in words(final.text)


async def test_every_request_option_reaches_the_model_call(
    nc: NATS, pipeline: Stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's message with every option header, through the real ingest and
    transcribe stages: the real model is called with each option, and ``answer`` reaches
    the final (the reason stage reads it there)."""
    from faster_whisper import WhisperModel

    calls: list[dict[str, Any]] = []
    model_call = WhisperModel.transcribe

    def recorded(self: WhisperModel, audio: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return model_call(self, audio, **kwargs)

    monkeypatch.setattr(WhisperModel, "transcribe", recorded)
    every = {h.LANGUAGE: "de", h.TASK: "translate", h.PROMPT: "Guten Morgen, Kathryn.",
             h.WORD_TIMESTAMPS: "true", h.VAD: "true", h.BEAM_SIZE: "3", h.ANSWER: "false"}
    assert set(every) == set(OPTION_HEADERS.values())
    async with Collector(nc) as seen:
        rid = await publish_audio(nc, (SPEECH / "de01.wav").read_bytes(), extra=every)
        await wait_finals(seen, 1, timeout=60)
    assert calls == [{
        "language": "de", "task": "translate", "initial_prompt": "Guten Morgen, Kathryn.",
        "word_timestamps": True, "vad_filter": True, "beam_size": 3,
    }]
    final = finals(seen)[rid]
    assert (final.task, final.answer) == ("translate", False)
    assert (final.language, final.language_probability) == ("de", 1.0)  # given, not detected
    assert final.segments and all(s.words for s in final.segments)


async def test_initial_prompt_spells_a_name_and_vad_skips_leading_silence(
    nc: NATS, pipeline: Stages
) -> None:
    name = (DATA / "options" / "name.wav").read_bytes()  # "... colleague Kathryn Nguyen ..."
    late = (DATA / "options" / "late_start.flac").read_bytes()  # 6 s silence, then speech
    english = {h.LANGUAGE: "en"}
    async with Collector(nc) as seen:
        unprompted = await publish_audio(nc, name, extra=english)
        prompted = await publish_audio(nc, name, extra={**english, h.PROMPT: "Kathryn Nguyen"})
        no_vad = await publish_audio(nc, late, content_type="audio/flac", extra=english)
        vad = await publish_audio(nc, late, content_type="audio/flac",
                                  extra={**english, h.VAD: "true"})
        await wait_finals(seen, 4, timeout=90)
    got = finals(seen)
    assert "kathryn" not in words(got[unprompted].text)  # Whisper base hears "Catherine"
    assert "kathryn" in words(got[prompted].text)
    assert got[no_vad].segments[0].start < 1.0  # Whisper alone puts the speech at 0 s
    assert got[vad].segments[0].start > 5.0  # after VAD: where the speech really starts
    assert words(got[vad].text) == words(references()["en03.wav"]["text"])


def flac_to_wav(data: bytes) -> bytes:
    """The 64 s clip as a 16 kHz WAV file: about 2 MB, over the 1 MB payload limit."""
    samples = bytearray()
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(audio=0):
            samples += frame.to_ndarray().astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(bytes(samples))
    return buf.getvalue()


async def test_audio_over_the_payload_limit_goes_through_the_object_store(
    nc: NATS, streams: None, audio_settings: Settings, upload: Upload
) -> None:
    # ack_wait far below the transcription time: only in_progress() heartbeats keep the
    # message from being redelivered while it is worked on
    quick = audio_settings.model_copy(
        update={"stage": audio_settings.stage.model_copy(update={"ack_wait": 1.0})})
    big = flac_to_wav((SPEECH / "long_en.flac").read_bytes())
    assert len(big) > nc.max_payload
    with pytest.raises(Exception, match="payload"):  # too big for a message: use the bucket
        await publish_audio(nc, big)
    await upload("meeting.wav", big)
    async with (running(build_ingest(quick), quick), running(build_transcribe(quick), quick),
                Collector(nc) as seen):
        rid = await publish_audio(nc, b"", extra={h.AUDIO_OBJECT: "meeting.wav"})
        await wait_finals(seen, 1, timeout=120)
    final = finals(seen)[rid]
    assert final.compute_seconds > 2 * quick.stage.ack_wait
    info = await nc.jetstream().consumer_info(subjects.STREAM_AUDIO, "transcribe-audio")
    assert info.num_redelivered == 0
    assert len(seen.on("mumu.transcript.final.")) == 1
    assert 63 < final.duration < 64
    assert len(partials_of(seen, rid)) >= 3  # a long file streams several segments
    truth = words(references()["long_en.flac"]["text"])
    assert jiwer.wer(truth, words(final.text)) <= 0.15


async def test_bad_files_are_dead_lettered_and_an_8khz_file_sent_after_transcribes(
    nc: NATS, pipeline: Stages
) -> None:
    import json

    bad_dir = SPEECH.parent / "bad"
    expected: dict[str, str] = json.loads((bad_dir / "expected.json").read_text())
    async with Collector(nc) as seen:
        codes = {
            await publish_audio(nc, (bad_dir / n).read_bytes()): c for n, c in expected.items()
        }
        good = await publish_audio(nc, (SPEECH.parent / "formats" / "en01_8k.wav").read_bytes())
        await wait_finals(seen, 1, timeout=60)
        errors = await seen.wait_count("mumu.error.", len(codes), timeout=30)
        await seen.wait_count("mumu.dlq.ingest", len(codes), timeout=30)
    got = {e.request_id: e.code
           for e in (PipelineError.model_validate_json(m.data) for m in errors)}
    assert got == codes
    assert dead_letter_codes(seen, "ingest") == codes
    assert not seen.on("mumu.dlq.transcribe")
    final = finals(seen)[good]
    assert jiwer.wer(words(references()["en01.wav"]["text"]), words(final.text)) <= 0.25


async def test_an_unknown_language_is_refused_without_retries(nc: NATS, pipeline: Stages) -> None:
    async with Collector(nc) as seen:
        rid = await publish_audio(nc, (SPEECH / "en01.wav").read_bytes(),
                                  extra={h.LANGUAGE: "xx"})
        errors = await seen.wait_count("mumu.error.", 1, timeout=30)
        letters = await seen.wait_count("mumu.dlq.transcribe", 1, timeout=30)
    err = PipelineError.model_validate_json(errors[0].data)
    assert (err.request_id, err.code, err.stage) == (rid, "schema_violation", "transcribe")
    assert dead_letter_codes(seen, "transcribe") == {rid: "schema_violation"}
    assert letters[0].headers[h.DLQ_DELIVERIES] == "1"
    assert not seen.on("mumu.transcript.")


async def test_translate_task_gives_english_text(nc: NATS, pipeline: Stages) -> None:
    async with Collector(nc) as seen:
        rid = await publish_audio(nc, (SPEECH / "de01.wav").read_bytes(),
                                  extra={h.TASK: "translate"})
        await wait_finals(seen, 1, timeout=60)
    final = finals(seen)[rid]
    assert final.task == "translate"
    assert final.language == "de"  # the spoken language, detected
    text = words(final.text)
    assert "morning" in text
    assert "guten" not in text
