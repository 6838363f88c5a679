"""LocalAgreement: commit what two consecutive hypotheses agree on.

Whisper re-decodes the growing audio of an utterance again and again; its last words change
while the speaker is mid-word, its first words settle. LocalAgreement-2 (Macháček et al.,
"Turning Whisper into Real-Time Transcription System", 2023; whisper_streaming) commits the
longest prefix two consecutive hypotheses share, after what is already committed. Committed
words are never taken back; the rest of the newest hypothesis is *tentative*.

Pure functions over word lists with absolute times (seconds since the stream started), so
the policy is tested without a model and a replica rebuilding a stream gets the same
commits from the same hypotheses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_PUNCT = re.compile(r"[^\w']+", re.UNICODE)


@dataclass(frozen=True)
class TimedWord:
    """A word of a hypothesis: its text as Whisper wrote it (leading space included) and
    its absolute start and end in seconds."""

    text: str
    start: float
    end: float

    @property
    def key(self) -> str:
        """What two hypotheses must agree on: the word without case, accents' composition
        differences or punctuation ("Paris," and "paris" agree)."""
        return _PUNCT.sub("", unicodedata.normalize("NFKC", self.text).casefold())


def agreed_prefix(previous: Sequence[TimedWord], current: Sequence[TimedWord]) -> int:
    """How many leading words of ``current`` ``previous`` also has, in the same order."""
    count = 0
    for old, new in zip(previous, current, strict=False):
        if old.key != new.key:
            break
        count += 1
    return count


@dataclass
class LocalAgreement:
    """The committed words of one utterance and the hypothesis they were checked against."""

    committed: list[TimedWord]
    previous: list[TimedWord]

    @classmethod
    def start(cls) -> LocalAgreement:
        return cls(committed=[], previous=[])

    @property
    def committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    def update(self, hypothesis: Sequence[TimedWord]) -> tuple[list[TimedWord], list[TimedWord]]:
        """Take the newest hypothesis of the whole utterance: returns the words committed
        now and the tentative rest."""
        fresh = self._uncommitted(hypothesis)
        agreed = agreed_prefix(self.previous, fresh)
        newly = fresh[:agreed]
        self.committed.extend(newly)
        self.previous = fresh[agreed:]
        return newly, list(self.previous)

    def finish(self, hypothesis: Sequence[TimedWord]) -> list[TimedWord]:
        """The utterance ended: the last hypothesis is final; returns the words committed
        now (the committed ones before stay as they were)."""
        rest = self._uncommitted(hypothesis)
        self.committed.extend(rest)
        self.previous = []
        return rest

    def _uncommitted(self, hypothesis: Sequence[TimedWord]) -> list[TimedWord]:
        """The part of ``hypothesis`` after the committed words.

        Matched by text first (the hypothesis usually repeats the committed words, since
        the model decodes the whole utterance), by time when the model rephrased what is
        already committed (then only words starting after the committed end count)."""
        words = [w for w in hypothesis if w.key]
        keys = [w.key for w in self.committed]
        if [w.key for w in words[:len(keys)]] == keys:
            return words[len(keys):]
        end = self.committed_end
        return [w for w in words if w.start >= end - 0.05]


def text_of(words: Sequence[TimedWord]) -> str:
    """The words as text (Whisper's words carry their own leading spaces)."""
    return "".join(w.text for w in words).strip()
