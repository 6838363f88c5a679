"""The durable JetStream consumers of the stages: what must exist for mumu to answer.

A stage's route names its durable from here (``Route.durable``); the runtime
creates it when the stage starts and it stays after the stage stops. Each stage's entry
in ``mumu.stages.registry`` lists its consumers; the gateway's ``/api/ready`` checks that
every one of them is present. A test builds every registered stage and compares its
routes' durables with the registry.
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


INGEST_AUDIO: Final = StageConsumer("ingest", subjects.STREAM_INGEST, "ingest-audio")
TRANSCRIBE_AUDIO: Final = StageConsumer("transcribe", subjects.STREAM_AUDIO, "transcribe-audio")
TRANSCRIBE_LIVE: Final = StageConsumer("transcribe", subjects.STREAM_INGEST, "transcribe-live")
"""Live streams' starts: the replica that holds one in progress owns that stream."""
REASON_TRANSCRIPTS: Final = StageConsumer(
    "reason", subjects.STREAM_RESULTS, "reason-mumu-results"
)
REASON_TEXT: Final = StageConsumer("reason", subjects.STREAM_INGEST, "reason-mumu-ingest")
PERSIST_RESULTS: Final = StageConsumer(
    "persist", subjects.STREAM_RESULTS, "persist-mumu-results"
)
