"""Every NATS subject, stream and bucket name mumu uses, as typed constants.

Nothing else in the code base spells a subject as a string literal. Subjects that
carry workspace data end with the workspace id, so NATS permissions can confine a
producer to ``mumu.ingest.*.<its workspace>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class SubjectPattern:
    """A family of subjects ``<prefix>.<last token>``; the last token is usually a workspace."""

    prefix: str

    def for_workspace(self, workspace_id: str) -> str:
        return self.token(workspace_id)

    def token(self, last: str) -> str:
        if not last or "." in last or "*" in last or ">" in last or " " in last:
            raise ValueError(f"invalid subject token: {last!r}")
        return f"{self.prefix}.{last}"

    @property
    def wildcard(self) -> str:
        """The filter matching every subject of the family."""
        return f"{self.prefix}.*"

    def matches(self, subject: str) -> bool:
        head, _, last = subject.rpartition(".")
        return head == self.prefix and bool(last)


def _token(value: str) -> str:
    """``value`` if it is one safe token of a subject or a stream/bucket name."""
    if not value or any(c in value for c in ".*> /\\\t"):
        raise ValueError(f"invalid name token: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StagePattern(SubjectPattern):
    """A family ``<prefix>.<stage>.<workspace>``: one ``SubjectPattern`` per stage
    (``stage(name)``), whose last token is the workspace (dead letters)."""

    def stage(self, stage: str) -> SubjectPattern:
        """The subjects of one stage: ``stage(s).for_workspace(ws)``, ``stage(s).wildcard``."""
        return SubjectPattern(f"{self.prefix}.{_token(stage)}")

    def token(self, last: str) -> str:
        """The filter of one workspace's subjects of every stage: ``<prefix>.*.<last>``."""
        return f"{self.prefix}.*.{_token(last)}"

    @property
    def wildcard(self) -> str:
        return f"{self.prefix}.*.*"

    def matches(self, subject: str) -> bool:
        head, _, rest = subject.partition(self.prefix + ".")
        parts = rest.split(".")
        return not head and len(parts) == 2 and all(parts)


def last_token(subject: str) -> str:
    """The workspace (or stage) a subject belongs to."""
    return subject.rpartition(".")[2]


INGEST_AUDIO: Final = SubjectPattern("mumu.ingest.audio")
INGEST_TEXT: Final = SubjectPattern("mumu.ingest.text")
INGEST_LIVE: Final = SubjectPattern("mumu.ingest.live")
"""Live speech: one ``LiveStart`` per stream; its audio follows on ``live_chunk``."""
AUDIO_READY: Final = SubjectPattern("mumu.audio.ready")
TRANSCRIPT_PARTIAL: Final = SubjectPattern("mumu.transcript.partial")
TRANSCRIPT_FINAL: Final = SubjectPattern("mumu.transcript.final")
STREAM_ENDED: Final = SubjectPattern("mumu.stream.ended")
"""A live stream is over: one ``LiveEnded`` per stream, after its last final (a subject
family of events, like the others here; not to be confused with the JetStream stream
names ``STREAM_*`` below)."""
ANSWER_DELTA: Final = SubjectPattern("mumu.answer.delta")
ANSWER_FINAL: Final = SubjectPattern("mumu.answer.final")
PERSISTED: Final = SubjectPattern("mumu.persisted")
ERROR: Final = SubjectPattern("mumu.error")
CONTROL_CANCEL: Final = SubjectPattern("mumu.control.cancel")
CONTROL_SHRED: Final = SubjectPattern("mumu.control.shred")
"""The workspace was crypto-shredded: persist replicas drop its cached data keys."""
DLQ: Final = StagePattern("mumu.dlq")
"""Dead letters ``mumu.dlq.<stage>.<ws>``: ``DLQ.stage(stage).for_workspace(ws)``; a
letter whose workspace cannot be read goes to ``DLQ_NO_WORKSPACE``. The workspace token
gives each tenant its own per-subject limit in ``MUMU_DLQ`` (``docs/reliability.md``)."""
DLQ_MAX_LETTER: Final = 1_048_576
"""Bytes of one dead letter at most (headers and body; ``max_msg_size`` of ``MUMU_DLQ``): a
letter that would be bigger is stored without its body, which stays in its own stream."""
DLQ_NO_WORKSPACE: Final = "_unknown"
"""The workspace token of a dead letter whose subject names no valid workspace (workspace
ids are UUIDs, so no workspace has this id)."""

ALL_PATTERNS: Final[tuple[SubjectPattern, ...]] = (
    INGEST_AUDIO,
    INGEST_TEXT,
    INGEST_LIVE,
    AUDIO_READY,
    TRANSCRIPT_PARTIAL,
    TRANSCRIPT_FINAL,
    STREAM_ENDED,
    ANSWER_DELTA,
    ANSWER_FINAL,
    PERSISTED,
    ERROR,
    CONTROL_CANCEL,
    DLQ,
    CONTROL_SHRED,
)

SHORT_LIVED: Final[tuple[SubjectPattern, ...]] = (TRANSCRIPT_PARTIAL, ANSWER_DELTA)
"""Live steps of a result, stored with a per-message TTL (``Nats-TTL``,
``MUMU_STAGE__LIVE_TTL``): the final carries the whole text, and the stream keeps it longer."""

# Streams (their configs live in streams/<name>.json)
STREAM_INGEST: Final = "MUMU_INGEST"
STREAM_AUDIO: Final = "MUMU_AUDIO"
STREAM_RESULTS: Final = "MUMU_RESULTS"
STREAM_PERSISTED: Final = "MUMU_PERSISTED"
STREAM_CONTROL: Final = "MUMU_CONTROL"
STREAM_DLQ: Final = "MUMU_DLQ"

# Buckets (streams/buckets.json)
BUCKET_AUDIO: Final = "mumu-audio"
BUCKET_SESSIONS: Final = "mumu-sessions"
BUCKET_QUOTA: Final = "mumu-quota"
"""Per-workspace quota usage (asks, in-flight requests, audio seconds): ``mumu.quota``."""

# Per workspace (created with the workspace; docs/security.md says why)
INTAKE_STREAM_PREFIX: Final = "MUMU_INTAKE_"
"""``MUMU_INTAKE_<ws>`` captures ``mumu.ingest.*.<ws>``: its own dedupe window, so no
workspace can suppress another's message through ``Nats-Msg-Id``; MUMU_INGEST sources it."""
UPLOAD_BUCKET_PREFIX: Final = "mumu-upload-"
"""``mumu-upload-<ws>``: a producer's large audio, readable and writable by that workspace."""
AUDIO_BUCKET_PREFIX: Final = "mumu-audio-"
"""``mumu-audio-<ws>``: one workspace's normalised audio between ingest and transcribe
(services only); its size is what the workspace can hold (``docs/reliability.md``)."""
ONCE_BUCKET_PREFIX: Final = "mumu-once-"
"""KV ``mumu-once-<ws>``: the runtime's idempotency records of one workspace's outputs
published at most once (finals), key ``<stage>.<msg id>``, services only
(``runtime/once.py``); its size is what the workspace can hold."""
PRODUCER_INBOX: Final = "_INBOX"
"""Producers of workspace ``ws`` use the inbox prefix ``_INBOX.<ws>``."""
SERVICE_INBOX: Final = "_MUMU_INBOX"
"""Services use ``_MUMU_INBOX.<role>``, a prefix no producer may subscribe to."""


REPLAY_PREFIX: Final = "mumu.replay"
"""``mumu.replay.<durable>.<ws>``: messages replayed to one stage's durable consumer only
(``mumu replay --to-stage``); the durable's stream stores them, no other consumer reads them."""


def replay_pattern(durable: str) -> SubjectPattern:
    """The replay subjects of one durable consumer (``contracts.consumers``)."""
    return SubjectPattern(f"{REPLAY_PREFIX}.{_token(durable)}")


def is_replay(subject: str) -> bool:
    """Whether ``subject`` is a replay subject of some stage."""
    return subject.startswith(REPLAY_PREFIX + ".")


LIVE_CHUNK_PREFIX: Final = "mumu.ingest.chunk"
LIVE_CHUNK_WILDCARD: Final = f"{LIVE_CHUNK_PREFIX}.*.*"
"""Every live stream's chunks: ``mumu.ingest.chunk.<stream id>.<ws>``."""


def live_chunk(stream_id: str, workspace: str) -> str:
    """The chunks of one live stream (binary audio; ``Mumu-Chunk-Seq``, and
    ``Mumu-Stream-End`` on the last): the stream id is a token, so one ordered consumer
    reads one stream and the workspace stays the last token."""
    return f"{LIVE_CHUNK_PREFIX}.{_token(stream_id)}.{_token(workspace)}"


def intake_stream(workspace: str) -> str:
    """The intake stream of one workspace."""
    return INTAKE_STREAM_PREFIX + _token(workspace)


def upload_bucket(workspace: str) -> str:
    """The Object Store bucket for one workspace's large uploads."""
    return UPLOAD_BUCKET_PREFIX + _token(workspace)


def audio_bucket(workspace: str) -> str:
    """The Object Store bucket for one workspace's normalised audio."""
    return AUDIO_BUCKET_PREFIX + _token(workspace)


def once_bucket(workspace: str) -> str:
    """The KV bucket of one workspace's once records (finals published at most once)."""
    return ONCE_BUCKET_PREFIX + _token(workspace)


def producer_inbox_prefix(workspace: str) -> str:
    """The inbox prefix a producer of ``workspace`` connects with."""
    return f"{PRODUCER_INBOX}.{_token(workspace)}"


def service_inbox_prefix(role: str) -> str:
    """The inbox prefix of one service role (no producer may subscribe to it)."""
    return f"{SERVICE_INBOX}.{_token(role)}"

