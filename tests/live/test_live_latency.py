"""What the end of an utterance costs, on the real model: the speaker's pause is decoded
at once, so a push-to-talk end or a hands-free endpoint that follows needs no decode of
its own (the final is the hypothesis that already covered all the speech), and the
endpoint is found between decode steps, within ``endpoint_step`` of the silence."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from mumu.bench.live_measure import audible_end
from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Engine
from mumu.stages.transcribe.live.decoder import LiveDecoder
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Vad
from mumu.stages.transcribe.live.settings import LiveSettings
from mumu.stages.transcribe.live.stream import Final, LiveStream
from tests.live.test_live_stream import CHUNK, clip, silence

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SETTINGS = LiveSettings(silence=0.6, step=1.0, endpoint_step=0.2, pause=0.3)
FRAME = SAMPLE_RATE // 10


def stream_on(engine: Engine) -> LiveStream:
    decoder = LiveDecoder(engine, Vad(), AudioOptions(language="en"))
    return LiveStream(decoder.decode, decoder.detect, SETTINGS)


def up_to(audio: np.ndarray, after_speech: float) -> np.ndarray:
    """``audio`` up to ``after_speech`` seconds after its speech ends."""
    end = Vad().speech(audio).end
    assert end is not None
    return audio[:end + int(after_speech * SAMPLE_RATE)]


async def test_push_to_talk_end_after_a_pause_takes_the_final_without_a_decode(
    engine: Engine,
) -> None:
    stream = stream_on(engine)
    # the user lets go 0.52 s after the speech: past the pause, before the silence
    audio = up_to(np.concatenate([silence(0.3), clip("en01.wav"), silence(1.0)]), 0.52)
    for start in range(0, audio.size, CHUNK):
        assert not [u for u in await stream.feed(audio[start:start + CHUNK])
                    if isinstance(u, Final)]
    decodes = stream.decodes
    (final,) = await stream.finish()
    assert isinstance(final, Final) and final.promoted
    assert stream.decodes == decodes  # the end cost no decode
    assert "quick brown fox" in final.text.lower()


async def test_an_end_without_a_pause_is_decoded_and_gives_the_same_text(
    engine: Engine,
) -> None:
    stream = stream_on(engine)
    audio = up_to(np.concatenate([silence(0.3), clip("en01.wav")]), -0.2)  # mid-word
    for start in range(0, audio.size - CHUNK, CHUNK):
        await stream.feed(audio[start:start + CHUNK])
    decodes = stream.decodes
    (final,) = await stream.finish(audio[(audio.size - CHUNK) // CHUNK * CHUNK:])
    assert isinstance(final, Final) and not final.promoted
    assert stream.decodes == decodes + 1  # the speech went on past the last hypothesis
    assert "quick brown fox" in final.text.lower()


async def test_hands_free_endpoint_comes_a_silence_after_the_sound_ends(
    engine: Engine,
) -> None:
    """Measured from where each clip's sound ends (not from the VAD's or Whisper's idea of
    it): the final comes ``silence`` after it, within one ``endpoint_step`` and the VAD's
    lag. Counting the silence from the padded end of speech (0.1 s later) fails this on
    half the clips, and decode steps alone (every 1 s) would end it up to a step later."""
    late = []
    for name in [f"en0{n}.wav" for n in range(1, 9)]:
        stream = stream_on(engine)
        speech = clip(name)
        lead = 0.4
        audio = np.concatenate([silence(lead), speech, silence(2.0)])
        sound_end = lead + audible_end(speech)
        at = None
        for start in range(0, audio.size, FRAME):  # a client's 100 ms frames
            if [u for u in await stream.feed(audio[start:start + FRAME])
                    if isinstance(u, Final)]:
                at = stream.position
                break
        assert at is not None, name
        late.append(at - sound_end - SETTINGS.silence)
    assert max(late) <= SETTINGS.endpoint_step + 0.1, late
    assert statistics.median(late) <= SETTINGS.endpoint_step / 2 + 0.1, late
