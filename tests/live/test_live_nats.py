"""Live speech over NATS on real servers and the real model: a producer streams PCM16 chunks
at the pace of speech; the transcribe stage publishes partials while the words are spoken
and one final per utterance; a replica killed mid-stream is replaced by another that
continues the stream from JetStream with nothing lost or repeated."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveEnded, LiveStart, TranscriptFinal, TranscriptPartial
from mumu.contracts.options import AudioOptions
from mumu.settings import Settings
from mumu.stages.transcribe.engine import wav_to_float
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage
from tests.audio.test_replicas import start_replica
from tests.conftest import Ensure
from tests.harness import Collector, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEECH = Path(__file__).parents[1] / "data" / "speech"
WS = "ws-live"
CHUNK = int(0.25 * SAMPLE_RATE)


def speech_with_pauses(*names: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    parts: list[np.ndarray] = []
    for name in names:
        parts.append((rng.standard_normal(int(0.8 * SAMPLE_RATE)) * 0.002).astype(np.float32))
        parts.append(wav_to_float((SPEECH / name).read_bytes()))
    parts.append((rng.standard_normal(int(1.2 * SAMPLE_RATE)) * 0.002).astype(np.float32))
    return np.concatenate(parts)


def as_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def stream_audio(nc: NATS, audio: np.ndarray, *, pace: float = 1.0,
                       stream_id: str | None = None) -> tuple[str, list[float]]:
    """Publish a LiveStart and the audio in 250 ms chunks, ``pace`` x real time; returns
    the stream's request id and when each chunk went out."""
    js = nc.jetstream()
    stream_id = stream_id or uuid.uuid4().hex
    request_id = f"live{uuid.uuid4().hex[:12]}"
    start = LiveStart(event_id=str(uuid.uuid4()), request_id=request_id, workspace_id=WS,
                      session_id="s-live", stream_id=stream_id,
                      options=AudioOptions(language="en"))
    await js.publish(subjects.INGEST_LIVE.for_workspace(WS), start.model_dump_json().encode())
    subject = subjects.live_chunk(stream_id, WS)
    sent: list[float] = []
    chunks = [audio[i:i + CHUNK] for i in range(0, audio.size, CHUNK)]
    for seq, chunk in enumerate(chunks, start=1):
        last = seq == len(chunks)
        await js.publish(subject, as_pcm16(chunk), headers={
            h.CHUNK_SEQ: str(seq), h.MSG_ID: f"{stream_id}.{seq}",
            **({h.STREAM_END: "true"} if last else {})})
        sent.append(time.monotonic())
        await asyncio.sleep(0.25 / pace)
    return request_id, sent


def partials_of(collector: Collector) -> list[TranscriptPartial]:
    return [TranscriptPartial.model_validate_json(m.data)
            for m in collector.on(subjects.TRANSCRIPT_PARTIAL.prefix)]


def finals_of(collector: Collector) -> list[TranscriptFinal]:
    return [TranscriptFinal.model_validate_json(m.data)
            for m in collector.on(subjects.TRANSCRIPT_FINAL.prefix)]


def assert_committed_only_grows(partials: list[TranscriptPartial],
                                finals: list[TranscriptFinal]) -> None:
    for final in finals:
        committed = [p.committed or "" for p in partials if p.utterance == final.utterance]
        for earlier, later in zip(committed, committed[1:], strict=False):
            assert later.startswith(earlier), (earlier, later)
        assert committed and final.text.startswith(committed[-1]), (committed, final.text)


@pytest.fixture
def live_settings(settings: Settings, tmp_path: Path) -> Settings:
    cache = tmp_path.parent / "models"  # shared by the tests of one session's basetemp
    return settings.model_copy(update={
        "transcribe": TranscribeSettings(model_cache_dir=cache, cpu_threads=2)})


async def test_a_live_stream_gives_partials_while_speaking_and_a_final_per_utterance(
    nc: NATS, streams: None, workspaces: Ensure, live_settings: Settings,
) -> None:
    await workspaces(WS)
    audio = speech_with_pauses("en01.wav", "en02.wav")
    first_speech_end = (0.8 * SAMPLE_RATE + wav_to_float(
        (SPEECH / "en01.wav").read_bytes()).size) / SAMPLE_RATE
    async with running(build_stage(live_settings), live_settings), \
            Collector(nc, f"mumu.transcript.*.{WS}", subjects.STREAM_RESULTS) as seen:
        started = time.monotonic()
        request_id, sent = await stream_audio(nc, audio)
        await seen.wait_count(subjects.TRANSCRIPT_FINAL.prefix, 2, timeout=60)
        committed_at = next(
            (m_at for m_at, p in zip(arrivals(seen), partials_of(seen), strict=False)
             if p.committed), None)
    finals = finals_of(seen)
    assert [f.utterance for f in finals] == [0, 1]
    assert [f.request_id for f in finals] == [f"{request_id}-0", f"{request_id}-1"]
    assert "quick brown fox" in finals[0].text.lower()
    assert "quarterly report" in finals[1].text.lower()
    assert_committed_only_grows(partials_of(seen), finals)
    # words were committed while the speaker was still speaking (how soon is measured by
    # `mumu bench live`, not asserted here)
    assert committed_at is not None and committed_at < sent[-1]
    assert sent[-1] - started > first_speech_end  # (the stream really was paced)


async def test_a_live_stream_of_silence_and_noise_gives_no_text_and_ends(
    nc: NATS, streams: None, workspaces: Ensure, live_settings: Settings,
) -> None:
    """Through the stage and JetStream, not the engine alone: digital silence, then 3 s of
    white noise, then near-silence; the stream ends with its ``stream.ended`` and no
    transcript at all (Whisper's "Thank you." on silence is what this guards against)."""
    await workspaces(WS)
    rng = np.random.default_rng(3)
    audio = np.concatenate([
        np.zeros(2 * SAMPLE_RATE, dtype=np.float32),
        (rng.standard_normal(3 * SAMPLE_RATE) * 0.05).astype(np.float32),
        (rng.standard_normal(2 * SAMPLE_RATE) * 0.002).astype(np.float32),
    ])
    async with running(build_stage(live_settings), live_settings), \
            Collector(nc, f"mumu.*.*.{WS}", subjects.STREAM_RESULTS) as seen:
        request_id, _ = await stream_audio(nc, audio, pace=4.0)
        await seen.wait_count(subjects.STREAM_ENDED.prefix, 1, timeout=60)
    ended = [LiveEnded.model_validate_json(m.data)
             for m in seen.on(subjects.STREAM_ENDED.prefix)]
    assert [e.request_id for e in ended] == [request_id]
    texts = [p.committed or p.tentative or p.segment.text for p in partials_of(seen)]
    assert [t for t in texts if t and t.strip()] == []
    assert finals_of(seen) == []


def arrivals(collector: Collector) -> list[float]:
    return [m.received for m in collector.on(subjects.TRANSCRIPT_PARTIAL.prefix)]


@pytest.fixture
def model_cache(tmp_path: Path) -> Path:
    from mumu.stages.transcribe.model import assemble_bundled

    cache = tmp_path.parent / "models"
    assemble_bundled(cache)  # so the two processes do not race to build it
    return cache


async def test_a_replica_killed_mid_stream_is_replaced_and_nothing_is_lost_or_repeated(
    nc: NATS, streams: None, workspaces: Ensure, nats_server: EmbeddedNats, model_cache: Path,
    live_settings: Settings,
) -> None:
    await workspaces(WS)
    audio = speech_with_pauses("en03.wav", "en05.wav", "en06.wav")
    quick = {"MUMU_TRANSCRIBE__LIVE__TAKEOVER": "3"}
    replicas = [await start_replica(nats_server, model_cache, quick) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in replicas)), 60)
        stream_id = uuid.uuid4().hex
        # the transcripts and the stream's end (mumu.stream.ended), in stream order
        async with Collector(nc, f"mumu.*.*.{WS}", subjects.STREAM_RESULTS) as seen:
            streaming = asyncio.create_task(stream_audio(nc, audio, stream_id=stream_id))
            await seen.wait_count(subjects.TRANSCRIPT_FINAL.prefix, 1, timeout=60)
            owner = next(r for r in replicas
                         if any(stream_id in str(e.get("msg", "")) for e in r.logs))
            owner.proc.send_signal(signal.SIGKILL)  # mid-stream: in the second utterance
            assert not streaming.done(), "the kill came after the stream ended"
            await streaming
            await seen.wait_count(subjects.TRANSCRIPT_FINAL.prefix, 3, timeout=90)
            await seen.wait_count(subjects.STREAM_ENDED.prefix, 1, timeout=30)
            await asyncio.sleep(1.0)  # anything repeated would arrive now
        finals = finals_of(seen)
        assert [f.utterance for f in finals] == [0, 1, 2], [f.text for f in finals]
        # the replica that took over ended the stream once, after its last final
        ended = [LiveEnded.model_validate_json(m.data)
                 for m in seen.on(subjects.STREAM_ENDED.prefix)]
        assert [(e.stream_id, e.utterances, e.reason) for e in ended] == [(stream_id, 3, "end")]
        assert seen.messages[-1].subject.startswith(subjects.STREAM_ENDED.prefix)
        assert_committed_only_grows(partials_of(seen), finals)
        # the same stream on one replica that was never killed: the same finals
        async with Collector(nc, f"mumu.transcript.final.{WS}", subjects.STREAM_RESULTS) as again:
            await stream_audio(nc, audio, pace=4.0)
            await again.wait_count(subjects.TRANSCRIPT_FINAL.prefix, 3, timeout=90)
        assert [f.text for f in finals] == [f.text for f in finals_of(again)]
    finally:
        await asyncio.gather(*(r.close() for r in replicas))
