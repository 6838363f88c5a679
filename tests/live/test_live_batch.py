"""Live decodes of several streams batched into one model call, on the real model (CPU
here; on by default on CUDA): a batch of windows gives the words and times the windows get
one by one; live streams over NATS with batching on make fewer model calls than decodes,
counted by the stage's ``mumu_live_batch_size`` histogram and by the engine, and their
finals are the ones of decodes one by one; with batching off (the default on CPU) every
live decode is its own model call, as before."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import LiveStart, TranscriptFinal
from mumu.contracts.options import AudioOptions
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.stage import StageContext
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings
from mumu.stages.transcribe.engine import Engine, Job, Result, wav_to_float
from mumu.stages.transcribe.live.batcher import batching
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Vad
from mumu.stages.transcribe.live.route import LiveRoute
from mumu.stages.transcribe.live.settings import ENCODER_MARGIN, LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream
from mumu.stages.transcribe.settings import TranscribeSettings
from mumu.stages.transcribe.stage import build_stage
from tests.conftest import Ensure
from tests.harness import Collector, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEECH = Path(__file__).parents[1] / "data" / "speech"
REFS = json.loads((SPEECH / "references.json").read_text())
WS = "ws-live-batch"
CHUNK = int(0.25 * SAMPLE_RATE)
OPTIONS = AudioOptions(language="en", word_timestamps=True, vad=False)
STREAMS = ("en01.wav", "en03.wav", "en05.wav")
"""Three streams spoken at once (clips of about 4 s each)."""
HISTOGRAM = "mumu_live_batch_size"


def norm(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def clip(name: str) -> np.ndarray:
    return wav_to_float((SPEECH / name).read_bytes())


def quiet(seconds: float, seed: int) -> np.ndarray:
    """A microphone's silence (a little noise, not digital zero)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.002).astype(np.float32)


def spoken(name: str) -> np.ndarray:
    return np.concatenate([quiet(0.8, 1), clip(name), quiet(1.2, 2)])


def chunks(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i:i + CHUNK] for i in range(0, audio.size, CHUNK)]


def window(audio: np.ndarray) -> Job:
    return Job(audio=audio, options=OPTIONS, encoder_margin=ENCODER_MARGIN)


def words_of(result: Result) -> list[tuple[str, float, float]]:
    return [(w.word, w.start, w.end) for s in result.segments for w in s.words or []]


def test_a_batch_of_windows_is_one_model_call_with_the_words_and_times_of_single_decodes(
    engine: Engine,
) -> None:
    # live windows of different streams: whole utterances, one cut mid-sentence, and one
    # of a microphone's silence (no text, batched or not)
    audio = [clip("en01.wav"), clip("en03.wav"), clip("en02.wav")[: int(3.5 * SAMPLE_RATE)],
             quiet(2.0, 3)]
    calls = engine.model_calls
    results, sizes = engine.run_windows([window(a) for a in audio])
    assert sizes == [len(audio)]
    assert engine.model_calls - calls == 1
    singles = [engine.run_one(window(a), lambda _: None, threading.Event()) for a in audio]
    assert engine.model_calls - calls == 1 + len(audio)
    for batched, single in zip(results, singles, strict=True):
        assert isinstance(batched, Result), batched
        assert batched.text == single.text
        assert batched.language == single.language == "en"
        got, want = words_of(batched), words_of(single)
        assert [w for w, _, _ in got] == [w for w, _, _ in want]
        for (_, start, end), (_, start1, end1) in zip(got, want, strict=True):
            assert abs(start - start1) <= 0.1 and abs(end - end1) <= 0.1, (got, want)
    for name, result in zip(("en01.wav", "en03.wav"), results, strict=False):
        assert isinstance(result, Result)
        said, heard = norm(REFS[name]["text"]), norm(result.text)
        assert sum(a != b for a, b in zip(said, heard, strict=True)) <= 1, result.text
    assert singles[-1].text == ""


def test_windows_batch_only_with_windows_of_the_same_language_task_beam_and_prompt_length(
    engine: Engine,
) -> None:
    """CTranslate2's batched ``generate`` wants one start-of-transcript position, ``align``
    one start sequence (language and task); a window whose language is not known yet is
    decoded on its own, where its language is detected."""
    jobs = [window(clip("en01.wav")), window(clip("en03.wav")),
            Job(audio=clip("en05.wav"), options=OPTIONS.model_copy(
                update={"prompt": "A question about a city."}), encoder_margin=ENCODER_MARGIN),
            Job(audio=clip("de01.wav"), options=OPTIONS.model_copy(update={"language": "de"}),
                encoder_margin=ENCODER_MARGIN),
            Job(audio=clip("en02.wav"), options=OPTIONS.model_copy(update={"language": None}),
                encoder_margin=ENCODER_MARGIN)]
    calls = engine.model_calls
    results, sizes = engine.run_windows(jobs)
    assert sorted(sizes) == [1, 1, 1, 2]
    assert engine.model_calls - calls == 4
    assert all(isinstance(r, Result) for r in results), results
    assert [r.language for r in results if isinstance(r, Result)] == ["en", "en", "en", "de",
                                                                      "en"]
    said = [norm(r.text) for r in results if isinstance(r, Result)]
    assert said[2][-2:] == ["capital", "city"] and said[4][:3] == ["please", "send", "the"]


async def play_one_by_one(engine: Engine, audio: np.ndarray) -> tuple[list[Final], int]:
    """A stream decoded as the live route decodes it with batching off: the finals and
    the number of decodes (the last chunk carries the end, as over NATS)."""
    decoder = LiveDecoder(engine, Vad(), AudioOptions(language="en"))
    stream = LiveStream(decoder.decode, decoder.detect, LiveSettings())
    parts = chunks(audio)
    updates = []
    for part in parts[:-1]:
        updates += await stream.feed(part)
    updates += await stream.finish(parts[-1])
    return [u for u in updates if isinstance(u, Final)], stream.decodes


@pytest.fixture(scope="module")
def one_by_one(engine: Engine) -> tuple[dict[str, list[str]], int, int]:
    """The streams decoded one by one, at once: finals per clip, decodes, model calls."""
    async def run() -> list[tuple[list[Final], int]]:
        return await asyncio.gather(*(play_one_by_one(engine, spoken(n)) for n in STREAMS))

    calls = engine.model_calls
    played = asyncio.run(run())
    finals = {n: [f.text for f in fs] for n, (fs, _) in zip(STREAMS, played, strict=True)}
    return finals, sum(d for _, d in played), engine.model_calls - calls


async def publish_stream(nc: NATS, name: str) -> str:
    """A ``LiveStart`` and the clip's chunks, all at once; returns the stream id."""
    js = nc.jetstream()
    stream_id = f"{name.split('.')[0]}{uuid.uuid4().hex[:8]}"
    start = LiveStart(event_id=str(uuid.uuid4()), request_id=f"live{uuid.uuid4().hex[:12]}",
                      workspace_id=WS, session_id="s-batch", stream_id=stream_id,
                      options=AudioOptions(language="en"))
    await js.publish(subjects.INGEST_LIVE.for_workspace(WS), start.model_dump_json().encode())
    parts = chunks(spoken(name))
    for seq, part in enumerate(parts, start=1):
        end = {h.STREAM_END: "true"} if seq == len(parts) else {}
        pcm = (np.clip(part, -1, 1) * 32767).astype("<i2").tobytes()
        await js.publish(subjects.live_chunk(stream_id, WS), pcm,
                         headers={h.CHUNK_SEQ: str(seq), h.MSG_ID: f"{stream_id}.{seq}", **end})
    return stream_id


async def test_live_streams_with_batching_on_share_model_calls_and_give_the_same_finals(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings,
    one_by_one: tuple[dict[str, list[str]], int, int], tmp_path: Path,
) -> None:
    await workspaces(WS)
    live = LiveSettings(batch="on", batch_window_ms=5, max_batch=8)
    batched = settings.model_copy(update={"transcribe": TranscribeSettings(
        model_cache_dir=tmp_path.parent / "models", cpu_threads=2, live=live)})
    stage = build_stage(batched)
    metrics = StageMetrics("transcribe")
    async with running(stage, batched, metrics=metrics), \
            Collector(nc, f"mumu.transcript.final.{WS}", subjects.STREAM_RESULTS) as seen:
        assert stage.live.batcher is not None  # on CPU only because it was asked for
        ids = await asyncio.gather(*(publish_stream(nc, n) for n in STREAMS))
        await seen.wait_count(subjects.TRANSCRIPT_FINAL.prefix, len(STREAMS), timeout=90)
    finals = [TranscriptFinal.model_validate_json(m.data)
              for m in seen.on(subjects.TRANSCRIPT_FINAL.prefix)]
    heard = {n: [f.text for f in sorted(finals, key=lambda f: f.utterance)
                 if f.stream_id == i] for n, i in zip(STREAMS, ids, strict=True)}
    expected, decodes, _ = one_by_one
    # word for word: a window batched with longer ones sees more trailing silence, which
    # may move punctuation ("dog" against "dog.": docs/audio.md, "What a batch changes")
    assert {n: [norm(t) for t in ts] for n, ts in heard.items()} == \
        {n: [norm(t) for t in ts] for n, ts in expected.items()}
    registry = metrics.registry
    calls = registry.get_sample_value(f"{HISTOGRAM}_count", {"stage": "transcribe"})
    batched_decodes = registry.get_sample_value(f"{HISTOGRAM}_sum", {"stage": "transcribe"})
    assert batched_decodes == decodes  # every live decode went through the batcher ...
    assert calls is not None and calls < decodes, (calls, decodes)  # ... in fewer calls
    assert stage.transcriber.model_calls == calls  # type: ignore[attr-defined]


async def test_with_batching_off_every_live_decode_is_its_own_model_call(
    nc: NATS, engine: Engine, one_by_one: tuple[dict[str, list[str]], int, int],
    settings: Settings,
) -> None:
    assert batching("auto", "cuda") and batching("on", "cpu")
    assert not batching("auto", "cpu") and not batching("off", "cuda")
    assert engine.device == "cpu"
    for setting in ("auto", "off"):  # auto: off on CPU
        ctx = StageContext(name="transcribe", settings=settings, nc=nc, js=nc.jetstream(),
                           metrics=StageMetrics("transcribe"),
                           tracing=Tracing("transcribe", None), log=logging.getLogger("mumu"))
        route = LiveRoute(LiveSettings(batch=setting), engine, "base")
        await route.start(ctx)
        try:
            assert route.batcher is None  # its decoders use the engine itself
        finally:
            await route.stop()
        assert ctx.metrics.registry.get_sample_value(
            f"{HISTOGRAM}_count", {"stage": "transcribe"}) == 0
    finals, decodes, calls = one_by_one
    assert calls == decodes  # the decodes of the unbatched run: one model call each
    assert all(finals.values())
