"""The client-visible event types and the subject family each travels on.

A websocket frame's ``type``, a waiter's terminal events and the CLI's printing all
use these members; nobody rebuilds a type from a subject string.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from mumu.contracts import subjects as s


class EventType(StrEnum):
    TRANSCRIPT_PARTIAL = "transcript.partial"
    TRANSCRIPT_FINAL = "transcript.final"
    STREAM_ENDED = "stream.ended"
    """A live stream is over (``LiveEnded``), after its last final."""
    ANSWER_DELTA = "answer.delta"
    ANSWER_FINAL = "answer.final"
    ERROR = "error"

    @property
    def pattern(self) -> s.SubjectPattern:
        return _PATTERNS[self]

    @classmethod
    def of_subject(cls, subject: str) -> EventType | None:
        """The type of a result subject (``mumu.answer.delta.<ws>``), None for others."""
        return cls.of_prefix(subject.rpartition(".")[0])

    @classmethod
    def of_prefix(cls, prefix: str) -> EventType | None:
        """The type of a result subject's prefix (``mumu.answer.delta``), None for others."""
        return _BY_PREFIX.get(prefix)


_PATTERNS: Final[dict[EventType, s.SubjectPattern]] = {
    EventType.TRANSCRIPT_PARTIAL: s.TRANSCRIPT_PARTIAL,
    EventType.TRANSCRIPT_FINAL: s.TRANSCRIPT_FINAL,
    EventType.STREAM_ENDED: s.STREAM_ENDED,
    EventType.ANSWER_DELTA: s.ANSWER_DELTA,
    EventType.ANSWER_FINAL: s.ANSWER_FINAL,
    EventType.ERROR: s.ERROR,
}
_BY_PREFIX: Final = {p.prefix: t for t, p in _PATTERNS.items()}

RESULT_TYPES: Final = tuple(EventType)
"""Every type a client sees, in pipeline order."""
TERMINAL_FOR_ASK: Final = frozenset({EventType.ANSWER_FINAL, EventType.ERROR})
TERMINAL_FOR_TRANSCRIPT: Final = frozenset({EventType.TRANSCRIPT_FINAL, EventType.ERROR})
