"""A live stream on the real model: partials before the speech ends, committed text only
grows, one final per utterance, nothing from silence, and the same chunks always give the
same updates (what lets another replica rebuild a stream from JetStream)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Engine, wav_to_float
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Vad
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream, Partial, Update

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEECH = Path(__file__).parents[1] / "data" / "speech"
REFS = json.loads((SPEECH / "references.json").read_text())
CHUNK = int(0.25 * SAMPLE_RATE)


def clip(name: str) -> np.ndarray:
    return wav_to_float((SPEECH / name).read_bytes())


def silence(seconds: float) -> np.ndarray:
    # a little noise, not digital zero: a microphone's silence
    rng = np.random.default_rng(7)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.002).astype(np.float32)


def norm(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()




async def play(engine: Engine, audio: np.ndarray) -> list[tuple[float, Update]]:
    """Feed ``audio`` in 250 ms chunks, then end the stream; each update with the stream
    position it came at."""
    decoder = LiveDecoder(engine, Vad(), AudioOptions(language="en"))
    stream = LiveStream(decoder.decode, decoder.detect, LiveSettings(silence=0.6))
    out: list[tuple[float, Update]] = []
    for start in range(0, audio.size, CHUNK):
        for update in await stream.feed(audio[start:start + CHUNK]):
            out.append((stream.position, update))
    out += [(stream.position, u) for u in await stream.finish()]
    return out


async def test_two_utterances_give_partials_while_speaking_and_one_final_each(
    engine: Engine,
) -> None:
    first, second = clip("en01.wav"), clip("en02.wav")
    audio = np.concatenate([silence(1.0), first, silence(1.5), second, silence(1.0)])
    first_end = (1.0 * SAMPLE_RATE + first.size) / SAMPLE_RATE
    updates = await play(engine, audio)
    finals = [u for _, u in updates if isinstance(u, Final)]
    assert [f.utterance for f in finals] == [0, 1]
    for final, name in zip(finals, ("en01.wav", "en02.wav"), strict=True):
        said, heard = norm(REFS[name]["text"]), norm(final.text)
        errors = sum(a != b for a, b in zip(said, heard, strict=False)) + abs(len(said) - len(heard))
        assert errors <= 2, (final.text, REFS[name]["text"])
    partials = [(at, u) for at, u in updates if isinstance(u, Partial)]
    assert any(at < first_end and u.utterance == 0 and u.committed for at, u in partials), \
        "committed words arrive before the first utterance ends"
    for number, final in enumerate(finals):
        committed = [u.committed for _, u in partials if u.utterance == number]
        assert committed, f"utterance {number} had partials"
        for earlier, later in zip(committed, committed[1:], strict=False):
            assert later.startswith(earlier), (earlier, later)  # only grows
        assert final.text.startswith(committed[-1])
    # the first final comes with the pause, not at the end of the stream
    first_final_at = next(at for at, u in updates if isinstance(u, Final))
    assert first_final_at < first_end + 1.5


async def test_silence_and_noise_give_no_text(engine: Engine) -> None:
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(3 * SAMPLE_RATE) * 0.05).astype(np.float32)
    assert await play(engine, np.concatenate([silence(4.0), noise, silence(2.0)])) == []


async def test_the_same_chunks_give_the_same_updates(engine: Engine) -> None:
    audio = np.concatenate([silence(0.5), clip("en03.wav"), silence(1.0)])
    first = [u for _, u in await play(engine, audio)]
    again = [u for _, u in await play(engine, audio)]
    assert first == again
    assert any(isinstance(u, Final) for u in first)
