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
from mumu.stages.transcribe.live.settings import LiveSettings

Decode = Callable[[np.ndarray, str | None], Awaitable[list[TimedWord]]]
"""Decode mono 16 kHz audio (with an optional prompt): words with times relative to it."""
Detect = Callable[[np.ndarray], Awaitable[Speech]]
"""Find the speech in mono 16 kHz audio."""

SENTENCE_END = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and CJK full stops


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
    promoted: bool = False
    """The newest hypothesis covered all the speech: no decode at the end."""


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
        self._unchecked = 0
        self._agreement = LocalAgreement.start()
        self._last_partial: tuple[str, str] | None = None
        self._spoken = False
        """Speech was found in the utterance's buffer."""
        self._last: tuple[float, list[TimedWord]] | None = None
        """The newest hypothesis of the utterance and the stream time it was decoded to."""
        self.decodes = 0
        self.promoted = 0
        """Finals that took the newest hypothesis without another decode."""

    @property
    def position(self) -> float:
        """Seconds of audio fed so far."""
        return self._offset + self._audio.size / SAMPLE_RATE

    async def feed(self, samples: np.ndarray) -> list[Update]:
        """Append mono 16 kHz float32 ``samples``: an endpoint check per ``endpoint_step``
        seconds, a decode step per ``step`` seconds (both at positions in the audio)."""
        updates: list[Update] = []
        tick = int(self.s.endpoint_step * SAMPLE_RATE)
        step = int(self.s.step * SAMPLE_RATE)
        while samples.size:
            room = min(tick - self._unchecked, step - self._undecoded)
            part, samples = samples[:room], samples[room:]
            self._append(part)
            if self._undecoded >= step:
                self._undecoded = self._unchecked = 0
                updates += await self._step()
            elif self._unchecked >= tick:
                self._unchecked = 0
                updates += await self._tick()
        return updates

    async def finish(self, samples: np.ndarray | None = None) -> list[Update]:
        """The stream ended (``samples``: its last chunk, taken without a decode step):
        what was said since the last final is final now."""
        if samples is not None:
            self._append(samples)
        speech = await self.detect(self._audio)
        if not speech.found:
            return []
        return [await self._final(speech.cut)]

    def _append(self, part: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, part.astype(np.float32, copy=False)])
        self._undecoded += part.size
        self._unchecked += part.size

    async def _step(self) -> list[Update]:
        speech = await self.detect(self._audio)
        if not speech.found:
            self._drop_silence()
            return []
        self._spoken = True
        ended = speech.trailing_silence() >= self.s.silence
        too_long = self._audio.size / SAMPLE_RATE >= self.s.max_utterance
        if ended or too_long:
            cut = speech.cut if ended else self._audio.size
            return [await self._final(cut)]
        return self._partial(await self._hypothesis(self._audio.size))

    async def _tick(self) -> list[Update]:
        """Between decode steps: has the speaker stopped? The VAD looks only at the
        buffer's tail (``silence`` + 0.6 s), so a check costs the same however long the
        utterance is. A pause of ``pause`` seconds decodes up to the end of speech at once
        (that hypothesis becomes the final if the speaker does not go on)."""
        if not self._spoken:
            return []
        window = min(self._audio.size, int((self.s.silence + 0.6) * SAMPLE_RATE))
        tail = await self.detect(self._audio[self._audio.size - window:])
        if not tail.found:  # silent for longer than the window: ended
            return await self._step()
        trailing = tail.trailing_silence()
        end = self._audio.size - window + tail.cut
        if trailing >= self.s.silence:
            return [await self._final(end)]
        if 0 < self.s.pause <= trailing and not self._covers(end):
            self._undecoded = 0  # this decode is the step's
            return self._partial(await self._hypothesis(end))
        return []

    def _covers(self, cut: int) -> bool:
        """The newest hypothesis was decoded up to ``cut`` (all of the speech)."""
        tolerance = 0.1  # the VAD's end of speech moves a little as silence follows it
        return self._last is not None and (
            self._last[0] >= self._offset + cut / SAMPLE_RATE - tolerance)

    def _drop_silence(self) -> None:
        """No speech yet: keep only a little audio before where speech may start."""
        keep = int(self.s.keep_before_speech * SAMPLE_RATE)
        if self._audio.size > keep:
            drop = self._audio.size - keep
            self._audio = self._audio[drop:]
            self._offset += drop / SAMPLE_RATE
        self._last = None
        self._spoken = False

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
        self.decodes += 1
        shift = self._offset + start / SAMPLE_RATE
        hypothesis = [TimedWord(w.text, w.start + shift, w.end + shift, w.probability)
                      for w in words]
        if start:  # the committed words before the window are not in this hypothesis
            before = [w for w in self._agreement.committed if w.end <= shift + 0.05]
            hypothesis = before + hypothesis
        self._last = (self._offset + end / SAMPLE_RATE, hypothesis)
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
        """The utterance ends at sample ``cut``: its newest hypothesis is final when it was
        decoded up to there (no decode), else a last decode up to ``cut``; the next
        utterance starts with the audio after it."""
        end = self._offset + cut / SAMPLE_RATE
        promoted = self._last is not None and self._covers(cut)
        if self._last is not None and promoted:
            self.promoted += 1
            hypothesis = [w for w in self._last[1] if w.start < end]  # none from the silence
        else:
            hypothesis = await self._hypothesis(cut)
        self._agreement.finish(hypothesis)
        words = list(self._agreement.committed)
        final = Final(self.utterance, text_of(words), self._offset, end, words, promoted)
        self.utterance += 1
        self._audio = self._audio[cut:]
        self._offset = end
        self._agreement = LocalAgreement.start()
        self._last_partial = None
        self._last = None
        self._spoken = False
        return final
