"""Voice activity for live audio: where speech is in an utterance's buffer, and whether the
speaker has stopped (trailing silence of the configured length).

Silero VAD, the model faster-whisper ships (no download). Whisper writes "Thank you." into
silence; audio with no speech in it is never decoded at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Speech:
    """What the VAD found in a buffer (sample offsets into it)."""

    start: int | None
    """First speech sample (None: no speech)."""
    end: int | None
    """Last speech sample (None: no speech)."""
    length: int
    """Samples in the buffer."""

    @property
    def found(self) -> bool:
        return self.start is not None

    def trailing_silence(self) -> float:
        """Seconds since speech ended (the whole buffer when there is no speech)."""
        end = self.end if self.end is not None else 0
        return (self.length - end) / SAMPLE_RATE


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    """Speech probability above which a 32 ms window is speech."""
    min_speech_ms: int = 200
    """Shorter blips (a click, a breath) are not speech."""
    pad_ms: int = 100
    """Speech regions are widened by this much (word onsets and endings are soft)."""


class Vad:
    """Silero VAD over a mono 16 kHz float32 buffer."""

    def __init__(self, settings: VadSettings | None = None) -> None:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        self._get = get_speech_timestamps
        s = settings or VadSettings()
        self._options = VadOptions(
            threshold=s.threshold, min_speech_duration_ms=s.min_speech_ms,
            min_silence_duration_ms=100, speech_pad_ms=s.pad_ms,
        )

    def speech(self, audio: np.ndarray) -> Speech:
        """Blocking (a few ms per second of audio): the speech in ``audio``."""
        if audio.size < 512:  # one Silero window
            return Speech(None, None, int(audio.size))
        regions = self._get(audio, self._options, sampling_rate=SAMPLE_RATE)
        if not regions:
            return Speech(None, None, int(audio.size))
        return Speech(int(regions[0]["start"]), int(regions[-1]["end"]), int(audio.size))
