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
    """Last speech sample, as the VAD found it (None: no speech)."""
    length: int
    """Samples in the buffer."""
    pad: int = 0
    """Samples an utterance keeps past ``end`` (word endings are soft)."""

    @property
    def found(self) -> bool:
        return self.start is not None

    @property
    def cut(self) -> int:
        """Where an utterance that ends here is cut: ``end`` plus the padding, within the
        buffer (the whole buffer when there is no speech)."""
        return self.length if self.end is None else min(self.length, self.end + self.pad)

    def trailing_silence(self) -> float:
        """Seconds since speech ended, from the unpadded end: the padding is audio kept
        with the words, not silence the speaker still has to wait through (the whole
        buffer when there is no speech)."""
        end = self.end if self.end is not None else 0
        return (self.length - end) / SAMPLE_RATE


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    """Speech probability above which a 32 ms window is speech."""
    min_speech_ms: int = 200
    """Shorter blips (a click, a breath) are not speech."""
    pad_ms: int = 100
    """An utterance keeps this much audio past the speech's end (word endings are soft);
    the trailing silence that ends it is counted from the unpadded end."""


class Vad:
    """Silero VAD over a mono 16 kHz float32 buffer."""

    def __init__(self, settings: VadSettings | None = None) -> None:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        self._get = get_speech_timestamps
        s = settings or VadSettings()
        self._pad = s.pad_ms * SAMPLE_RATE // 1000
        self._options = VadOptions(  # unpadded: the padding is applied by Speech.cut
            threshold=s.threshold, min_speech_duration_ms=s.min_speech_ms,
            min_silence_duration_ms=100, speech_pad_ms=0,
        )

    def speech(self, audio: np.ndarray) -> Speech:
        """Blocking (a few ms per second of audio): the speech in ``audio``."""
        if audio.size < 512:  # one Silero window
            return Speech(None, None, int(audio.size))
        regions = self._get(audio, self._options, sampling_rate=SAMPLE_RATE)
        if not regions:
            return Speech(None, None, int(audio.size))
        return Speech(int(regions[0]["start"]), int(regions[-1]["end"]), int(audio.size),
                      self._pad)
