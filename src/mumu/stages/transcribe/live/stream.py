"""One live audio stream, utterance by utterance: audio in, partials and finals out.

Every decision is taken at a position in the audio, never at a wall-clock time: a decode
step runs after each ``step`` seconds of new audio, the endpoint is a silence of
``silence`` seconds *in the audio*. So the same chunks always give the same partials and
finals, and a replica that takes over a stream rebuilds its state by feeding the chunks
again from the stream's durable log (``docs/audio.md``, "Live speech").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mumu.stages.transcribe.live.agreement import LocalAgreement, TimedWord, text_of
from mumu.stages.transcribe.live.endpoint import SAMPLE_RATE, Speech

Decode = Callable[[np.ndarray, str | None], Awaitable[list[TimedWord]]]
"""Decode mono 16 kHz audio (with an optional prompt): words with times relative to it."""
Detect = Callable[[np.ndarray], Awaitable[Speech]]
"""Find the speech in mono 16 kHz audio."""

SENTENCE_END = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and CJK full stops


@dataclass(frozen=True)
class LiveSettings:
    step: float = 1.0
    """Seconds of new audio between two decodes of the utterance."""
    silence: float = 0.6
    """Trailing silence that ends an utterance (the endpoint)."""
    max_utterance: float = 30.0
    """An utterance this long ends even if the speaker goes on."""
    trim_after: float = 12.0
    """A decode window longer than this starts at the last committed sentence end instead
    (its words go in as the prompt): each step costs what the last sentences cost."""
    keep_before_speech: float = 0.3
    """Audio kept before speech while waiting for it (a soft onset is not cut)."""


@dataclass(frozen=True)
class Partial:
    utterance: int
    committed: str
    """Never taken back: a later partial or the final starts with it."""
    tentative: str
    start: float
    end: float


@dataclass(frozen=True)
class Final:
    utterance: int
    text: str
    start: float
    end: float
    words: list[TimedWord] = field(default_factory=list)


Update = Partial | Final


class LiveStream:
    """The state of one stream; ``feed`` chunks in order, ``finish`` at its end."""

    def __init__(self, decode: Decode, detect: Detect, settings: LiveSettings | None = None
                 ) -> None:
        self.decode = decode
        self.detect = detect
        self.s = settings or LiveSettings()
        self.utterance = 0
        self._audio = np.zeros(0, dtype=np.float32)
        self._offset = 0.0
        """Stream time (seconds) of ``_audio[0]``."""
        self._undecoded = 0
        self._agreement = LocalAgreement.start()
        self._last_partial: tuple[str, str] | None = None

    @property
    def position(self) -> float:
        """Seconds of audio fed so far."""
        return self._offset + self._audio.size / SAMPLE_RATE

    async def feed(self, samples: np.ndarray) -> list[Update]:
        """Append mono 16 kHz float32 ``samples``; a decode step per ``step`` seconds."""
        updates: list[Update] = []
        step = int(self.s.step * SAMPLE_RATE)
        while samples.size:
            room = step - self._undecoded
            part, samples = samples[:room], samples[room:]
            self._audio = np.concatenate([self._audio, part.astype(np.float32, copy=False)])
            self._undecoded += part.size
            if self._undecoded >= step:
                self._undecoded = 0
                updates += await self._step()
        return updates

    async def finish(self) -> list[Update]:
        """The stream ended: what was said since the last final is final now."""
        speech = await self.detect(self._audio)
        if not speech.found:
            return []
        return [await self._final(speech.end or self._audio.size)]

    async def _step(self) -> list[Update]:
        speech = await self.detect(self._audio)
        if not speech.found:
            self._drop_silence()
            return []
        ended = speech.trailing_silence() >= self.s.silence
        too_long = self._audio.size / SAMPLE_RATE >= self.s.max_utterance
        if ended or too_long:
            cut = speech.end if ended and speech.end is not None else self._audio.size
            return [await self._final(cut)]
        return self._partial(await self._hypothesis(self._audio.size))

    def _drop_silence(self) -> None:
        """No speech yet: keep only a little audio before where speech may start."""
        keep = int(self.s.keep_before_speech * SAMPLE_RATE)
        if self._audio.size > keep:
            drop = self._audio.size - keep
            self._audio = self._audio[drop:]
            self._offset += drop / SAMPLE_RATE

    async def _hypothesis(self, end: int) -> list[TimedWord]:
        """Decode the utterance up to sample ``end``, from the last committed sentence end
        when the window is long (its committed words as the prompt)."""
        start, prompt = 0, None
        if end / SAMPLE_RATE > self.s.trim_after:
            boundary = self._sentence_boundary()
            if boundary is not None:
                start = int((boundary - self._offset) * SAMPLE_RATE)
                prompt = text_of(self._agreement.committed)
        words = await self.decode(self._audio[start:end], prompt)
        shift = self._offset + start / SAMPLE_RATE
        hypothesis = [TimedWord(w.text, w.start + shift, w.end + shift) for w in words]
        if start:  # the committed words before the window are not in this hypothesis
            before = [w for w in self._agreement.committed if w.end <= shift + 0.05]
            hypothesis = before + hypothesis
        return hypothesis

    def _sentence_boundary(self) -> float | None:
        """Stream time of the end of the last committed word that ends a sentence."""
        for word in reversed(self._agreement.committed):
            if word.text.rstrip().endswith(SENTENCE_END):
                return word.end
        return None

    def _partial(self, hypothesis: Sequence[TimedWord]) -> list[Update]:
        self._agreement.update(hypothesis)
        committed = text_of(self._agreement.committed)
        tentative = text_of(self._agreement.previous)
        if (committed, tentative) == self._last_partial or not (committed or tentative):
            return []
        self._last_partial = (committed, tentative)
        return [Partial(self.utterance, committed, tentative, self._offset, self.position)]

    async def _final(self, cut: int) -> Final:
        """Decode the utterance up to sample ``cut`` a last time; it ends there and the
        next utterance starts with the audio after it."""
        hypothesis = await self._hypothesis(cut)
        self._agreement.finish(hypothesis)
        words = list(self._agreement.committed)
        final = Final(self.utterance, text_of(words), self._offset,
                      self._offset + cut / SAMPLE_RATE, words)
        self.utterance += 1
        self._audio = self._audio[cut:]
        self._offset += cut / SAMPLE_RATE
        self._agreement = LocalAgreement.start()
        self._last_partial = None
        return final
