"""Short-context decodes on the real model: the encoder gets a live window's frames plus a
margin instead of Whisper's padded 30 s. The words still come with times inside the
window, the decode costs several times less model CPU than the padded one of the same
window (a ratio measured in the same run), and a live stream decoded this way still gives
no text for silence and noise (the VAD decides what is decoded)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mumu.contracts.events import Segment
from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Engine, Job, Result, wav_to_float
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Vad
from mumu.stages.transcribe.live.settings import ENCODER_MARGIN, LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream, Update

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEECH = Path(__file__).parents[1] / "data" / "speech"
REFS = json.loads((SPEECH / "references.json").read_text())
OPTIONS = AudioOptions(language="en", word_timestamps=True)


def clip(name: str) -> np.ndarray:
    return wav_to_float((SPEECH / name).read_bytes())


def norm(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def errors(reference: str, heard: str) -> int:
    said, got = norm(reference), norm(heard)
    return sum(a != b for a, b in zip(said, got, strict=False)) + abs(len(said) - len(got))




def decode(engine: Engine, audio: np.ndarray, margin: float) -> tuple[Result, float]:
    """The engine's blocking decode of one window, and the process CPU seconds it took
    (all of CTranslate2's threads; the machine's other load does not enter)."""
    segments: list[Segment] = []
    started = time.process_time()
    result = engine.run_one(Job(audio=audio, options=OPTIONS, encoder_margin=margin),
                            lambda item: segments.append(item[0]), threading.Event())
    spent = time.process_time() - started
    assert segments == result.segments  # each segment is delivered as decoded
    return result, spent


def test_a_short_context_decode_gives_the_words_with_times_inside_the_window_for_less_cpu(
    engine: Engine,
) -> None:
    audio = clip("en01.wav")
    duration = audio.size / SAMPLE_RATE
    decode(engine, audio[: SAMPLE_RATE], ENCODER_MARGIN)  # first call pays one-time allocations
    short, short_cpu = decode(engine, audio, ENCODER_MARGIN)
    padded, padded_cpu = decode(engine, audio, 0.0)
    words = [w for s in short.segments for w in s.words or []]
    said = REFS["en01.wav"]["text"]
    assert errors(said, short.text) <= 1, short.text
    assert norm(" ".join(w.word for w in words)) == norm(short.text)
    assert words[0].start < 0.5
    for earlier, later in zip(words, words[1:], strict=False):
        assert earlier.start <= earlier.end <= later.start + 0.01, (earlier, later)
    assert words[-1].end <= duration + 0.05, (words[-1], duration)
    assert words[-1].end > duration - 1.0
    assert errors(said, padded.text) <= 1, padded.text
    assert padded_cpu >= 1.5 * short_cpu, (padded_cpu, short_cpu)


def test_a_window_near_30_seconds_is_decoded_padded(engine: Engine) -> None:
    """Window + margin at Whisper's 30 s or more: the usual decode (same words)."""
    audio = np.concatenate([clip("en02.wav"), np.zeros(29 * SAMPLE_RATE - clip("en02.wav").size,
                                                        dtype=np.float32)])
    assert engine.short_context is not None
    assert engine.short_context.decode(audio, OPTIONS, ENCODER_MARGIN) is None


async def play(engine: Engine, audio: np.ndarray) -> list[Update]:
    decoder = LiveDecoder(engine, Vad(), AudioOptions(language="en"))
    assert decoder.encoder_margin == ENCODER_MARGIN > 0  # live decodes are short by default
    stream = LiveStream(decoder.decode, decoder.detect, LiveSettings())
    chunk = SAMPLE_RATE // 4
    out: list[Update] = []
    for start in range(0, audio.size, chunk):
        out += await stream.feed(audio[start:start + chunk])
    return out + await stream.finish()


async def test_a_live_stream_of_short_context_decodes_gives_the_words_and_silence_none(
    engine: Engine,
) -> None:
    rng = np.random.default_rng(3)
    quiet = (rng.standard_normal(2 * SAMPLE_RATE) * 0.002).astype(np.float32)
    noise = (rng.standard_normal(2 * SAMPLE_RATE) * 0.05).astype(np.float32)
    assert await play(engine, np.concatenate([quiet, noise, quiet])) == []
    updates = await play(engine, np.concatenate([quiet, clip("en03.wav"), quiet]))
    finals = [u for u in updates if isinstance(u, Final)]
    assert len(finals) == 1
    assert errors(REFS["en03.wav"]["text"], finals[0].text) <= 1, finals[0].text


def test_what_whisper_decodes_after_the_window_is_cut(engine: Engine) -> None:
    """With a short encoder input Whisper tends to read the window again after its end
    (measured: docs/audio.md); the second reading is not the speaker's words."""
    from faster_whisper.tokenizer import Tokenizer

    from mumu.stages.transcribe.short_context import spoken_tokens

    tok = Tokenizer(engine.model.hf_tokenizer, True, task="transcribe", language="en")

    def seq(*parts: str | float) -> list[int]:
        return [tok.timestamp_begin + round(p / 0.02) if isinstance(p, float)
                else t for p in parts for t in ([0] if isinstance(p, float) else tok.encode(p))]

    def said(tokens: list[int], end: float) -> str:
        return str(tok.decode(spoken_tokens(tok, tokens, round(end / 0.02)))).strip()

    again = seq(0.0, " The doctor said.", 2.0, 2.0, " The doctor said.", 4.0)
    assert said(again, 3.0) == "The doctor said."
    nearly = seq(0.0, " Which river flows.", 2.0, 2.0, " We river flows.", 4.0)
    assert said(nearly, 3.0) == "Which river flows."
    two = seq(0.0, " Good morning.", 2.0, 2.0, " The budget is ready.", 5.0)
    assert said(two, 6.0) == "Good morning. The budget is ready."
    past_end = seq(0.0, " Good morning.", 3.2, 3.2, " Thank you.", 6.0)
    assert said(past_end, 3.0) == "Good morning."
    inside = seq(0.0, " Remind me to call my sister, Remind me to call my sister")
    assert said(inside, 6.0) == "Remind me to call my sister,"
    stutter = seq(0.0, " I I I want to go.", 2.0)
    assert said(stutter, 6.0) == "I I I want to go."
    open_last = seq(0.0, " Good morning.", 2.0, 2.0, " The budget")
    assert said(open_last, 6.0) == "Good morning. The budget"
