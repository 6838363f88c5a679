"""Event models: the JSON bodies on mumu's subjects (schema version 1).

Every event carries ``event_id``, ``request_id``, ``workspace_id``, ``session_id``,
``occurred_at`` and ``schema_version``. Event ids are derived from the request id,
the stage and the output's position, so a retried or replayed stage produces the
same ids (and the same ``Nats-Msg-Id``), and duplicates are dropped.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mumu.contracts import headers as h
from mumu.contracts.ids import Id
from mumu.contracts.options import OPTION_HEADERS, AudioOptions, Task

SCHEMA_VERSION: Literal[1] = 1
_ID_NAMESPACE = uuid.UUID("6d1f3c1e-8a8e-4b1b-9a55-6d756d750001")

def derive_id(workspace_id: str, request_id: str, stage: str, *parts: str | int) -> str:
    """A deterministic id for the output ``parts`` of ``stage`` for ``request_id``.

    The workspace is part of it: request ids are chosen by producers, and JetStream
    dedupes ``Nats-Msg-Id`` across a whole stream, so two tenants using one request id
    must never collide (the second one's message would be dropped as a duplicate).
    """
    name = ":".join([workspace_id, request_id, stage, *map(str, parts)])
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    request_id: Id
    workspace_id: Id
    session_id: Id
    occurred_at: datetime = Field(default_factory=utcnow)


class IngestAudioHeaders(AudioOptions):
    """Headers of ``mumu.ingest.audio.<ws>``; the body is the raw audio file.

    The audio options (``Mumu-Language`` ... ``Mumu-Answer``) are ``AudioOptions``, under
    their header names. With ``Mumu-Audio-Object`` set the body is empty and the audio is
    the named object in the workspace's own Object Store bucket ``mumu-upload-<ws>`` (for
    files over the payload limit); ingest deletes it once the audio is processed.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True,
        alias_generator=OPTION_HEADERS.__getitem__,  # the options' header names
    )

    content_type: str = Field(alias=h.CONTENT_TYPE, description="e.g. audio/wav, audio/webm")
    session_id: Id = Field(alias=h.SESSION)
    request_id: Id = Field(alias=h.REQUEST_ID)
    audio_object: str | None = Field(default=None, alias=h.AUDIO_OBJECT)


class TextAsk(Event):
    """``mumu.ingest.text.<ws>``: a question asked as text (skips ingest and transcribe)."""

    text: str = Field(max_length=32_000)
    language: str | None = None


class LiveStart(Event):
    """``mumu.ingest.live.<ws>``: a live stream begins; its audio follows as chunks on
    ``mumu.ingest.chunk.<stream_id>.<ws>`` (raw PCM16 little-endian, 16 kHz mono).

    Each utterance of the stream becomes a request of its own (request id
    ``<request_id>-<n>``, n from 0), answered as soon as its final is out. The event's own
    ``request_id`` names the stream in errors."""

    stream_id: Id
    format: Literal["pcm16"] = Field(
        default="pcm16", description="16 kHz mono signed 16-bit little-endian PCM")
    options: AudioOptions = Field(default_factory=AudioOptions)


class AudioReady(Event):
    """``mumu.audio.ready.<ws>``: normalised 16 kHz mono audio is in the Object Store."""

    object_name: str
    duration: float = Field(ge=0)
    sample_rate: int = 16_000
    source_content_type: str
    options: AudioOptions = Field(default_factory=AudioOptions)

    @field_validator("options", mode="before")
    @classmethod
    def _earlier_option_names(cls, value: Any) -> Any:
        """Events written before the options became one model named two of them after
        faster-whisper's arguments; they may still wait in the stream during an upgrade."""
        if isinstance(value, dict) and _EARLIER_NAMES.keys() & value.keys():
            return {_EARLIER_NAMES.get(k, k): v for k, v in value.items()}
        return value


_EARLIER_NAMES = {"initial_prompt": "prompt", "vad_filter": "vad"}


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float
    end: float
    word: str
    probability: float


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None


class TranscriptPartial(Event):
    """``mumu.transcript.partial.<ws>``: one segment, as soon as it is decoded; on a live
    stream, the utterance so far: ``committed`` text (never taken back: a later partial and
    the final start with it) and ``tentative`` text (may still change)."""

    segment: Segment
    language: str | None = None
    committed: str | None = None
    tentative: str | None = None
    stream_id: Id | None = None
    utterance: int | None = Field(default=None, ge=0)


class TranscriptFinal(Event):
    """``mumu.transcript.final.<ws>``: the whole transcript."""

    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    model: str
    compute_seconds: float
    task: Task = "transcribe"
    answer: bool = Field(default=True, description="false: transcribe only, no answer")
    stream_id: Id | None = Field(default=None, description="the live stream it ends an "
                                 "utterance of")
    utterance: int | None = Field(default=None, ge=0)


class AnswerDelta(Event):
    """``mumu.answer.delta.<ws>``: a chunk of the streamed answer.

    ``restart`` marks the first delta of a retried attempt: the client drops what it
    showed of earlier attempts.
    """

    index: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1)
    text: str
    restart: bool = False


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0


class AnswerFinal(Event):
    """``mumu.answer.final.<ws>``: the whole answer, once."""

    question: str
    text: str
    model: str
    language: str | None = None
    usage: Usage = Field(default_factory=Usage)
    time_to_first_token: float | None = None
    total_seconds: float
    cancelled: bool = False


class Persisted(Event):
    """``mumu.persisted.<ws>``: a transcript or answer is committed (encrypted)."""

    kind: Literal["transcript", "answer"]
    source_event_id: Id


ErrorCode = Literal[
    "schema_violation",
    "unsupported_audio",
    "empty_audio",
    "too_long",
    "too_large",
    "missing_header",
    "unknown_workspace",
    "no_speech",
    "reason_unavailable",
    "transcribe_failed",
    "persist_failed",
    "max_deliver_exceeded",
    "quota_exceeded",
    "internal",
    "shredded",
    "workspace_shredded",
    "result_bytes_exceeded",
    "stream_timeout",
]


class PipelineError(Event):
    """``mumu.error.<ws>``: a request failed; shown to the client."""

    stage: str
    code: ErrorCode
    message: str
    subject: str


class LiveEnded(Event):
    """``mumu.stream.ended.<ws>``: a live stream is over. Exactly one per stream, after
    its last ``transcript.final`` (a stream that ended in silence has none), whatever ended
    it; ``request_id`` is the stream's (its ``LiveStart``'s). The event id is derived from
    the stream, so a replica that takes the stream over cannot publish a second one."""

    stream_id: Id
    utterances: int = Field(ge=0, description="finals the stream had (utterances 0..n-1)")
    seconds: float = Field(ge=0, description="seconds of audio the stage took")
    reason: Literal["end"] | ErrorCode = Field(
        description="`end`: the producer's last chunk (`Mumu-Stream-End`); else the code of "
        "the error that ended it (`stream_timeout`, `quota_exceeded` past the longest "
        "audio, `schema_violation`), published after this event")


class CancelRequest(Event):
    """``mumu.control.cancel.<ws>``: stop the answer for ``request_id``."""


class WorkspaceShredded(BaseModel):
    """``mumu.control.shred.<ws>``: the workspace's data keys were destroyed (``mumu keys
    shred``); every persist replica drops its cached keys of it at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    workspace_id: Id
    occurred_at: datetime = Field(default_factory=utcnow)


class DeadLetterHeaders(BaseModel):
    """Headers of ``mumu.dlq.<stage>.<ws>``; the body is the original payload, unchanged.

    The original headers follow, each prefixed with ``Mumu-Orig-``.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    stage: str = Field(alias="Mumu-Dlq-Stage")
    code: ErrorCode = Field(alias="Mumu-Dlq-Code")
    reason: str = Field(alias="Mumu-Dlq-Reason")
    subject: str = Field(alias="Mumu-Dlq-Subject")
    stream: str = Field(alias="Mumu-Dlq-Stream")
    sequence: int = Field(alias="Mumu-Dlq-Sequence")
    deliveries: int = Field(alias="Mumu-Dlq-Deliveries")
    body_omitted: Literal["true"] | None = Field(
        default=None, alias="Mumu-Dlq-Body-Omitted",
        description="set when the original was too large to carry: the body is empty and "
        "the original is message `sequence` of `stream`",
    )
    body_size: int | None = Field(
        default=None, alias="Mumu-Dlq-Body-Size", description="bytes of the omitted body",
    )
