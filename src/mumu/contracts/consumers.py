"""The durable JetStream consumers of the stages: what must exist for mumu to answer.

A stage's route names its durable from here (``Route.durable``); the runtime
creates it when the stage starts and it stays after the stage stops. Each stage's entry
in ``mumu.stages.registry`` lists its consumers; the gateway's ``/api/ready`` checks that
every one of them is present. A test builds every registered stage and compares its
routes' durables with the registry.

Each durable also reads its own replay subjects (``replay``, ``mumu.replay.<durable>.*``,
stored by its stream): ``mumu replay --to-stage`` publishes there, so only that stage
handles the messages again. ``inputs`` are the subjects its route consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mumu.contracts import subjects


@dataclass(frozen=True, slots=True)
class StageConsumer:
    """One durable pull consumer of one stage."""

    stage: str
    stream: str
    durable: str
    inputs: tuple[subjects.SubjectPattern, ...] = ()
    """The subjects its route consumes (a replay to the stage must be one of them)."""

    @property
    def replay(self) -> subjects.SubjectPattern:
        """``mumu.replay.<durable>``: messages replayed to this consumer only."""
        return subjects.replay_pattern(self.durable)


INGEST_AUDIO: Final = StageConsumer(
    "ingest", subjects.STREAM_INGEST, "ingest-audio", (subjects.INGEST_AUDIO,)
)
TRANSCRIBE_AUDIO: Final = StageConsumer(
    "transcribe", subjects.STREAM_AUDIO, "transcribe-audio", (subjects.AUDIO_READY,)
)
INGEST_QUOTA_ENDS: Final = StageConsumer(
    "ingest", subjects.STREAM_RESULTS, "ingest-quota-ends",
    (subjects.ANSWER_FINAL, subjects.TRANSCRIPT_FINAL, subjects.ERROR,
     subjects.STREAM_ENDED),
)
"""Ends of requests (finals, errors, live streams' ends): ingest frees their in-flight
quota slots."""
TRANSCRIBE_LIVE: Final = StageConsumer(
    "transcribe", subjects.STREAM_INGEST, "transcribe-live", (subjects.INGEST_LIVE,)
)
"""Live streams' starts: the replica that holds one in progress owns that stream."""
REASON_TRANSCRIPTS: Final = StageConsumer(
    "reason", subjects.STREAM_RESULTS, "reason-mumu-results", (subjects.TRANSCRIPT_FINAL,)
)
REASON_TEXT: Final = StageConsumer(
    "reason", subjects.STREAM_INGEST, "reason-mumu-ingest", (subjects.INGEST_TEXT,)
)
PERSIST_RESULTS: Final = StageConsumer(
    "persist", subjects.STREAM_RESULTS, "persist-mumu-results",
    (subjects.TRANSCRIPT_FINAL, subjects.ANSWER_FINAL),
)

DECLARED: Final = (INGEST_AUDIO, INGEST_QUOTA_ENDS, TRANSCRIBE_AUDIO, TRANSCRIBE_LIVE,
                   REASON_TRANSCRIPTS, REASON_TEXT, PERSIST_RESULTS)
"""Every durable of the stages above (the registry lists them per stage)."""

REPLAY_PATTERNS: Final = tuple(c.replay for c in DECLARED)
"""The replay subjects, one family per durable; each stored by that durable's stream."""


def replay_filter(durable: str) -> str | None:
    """The replay subject filter a stage's durable adds to its own (None: not a stage's)."""
    for consumer in DECLARED:
        if consumer.durable == durable:
            return consumer.replay.wildcard
    return None
