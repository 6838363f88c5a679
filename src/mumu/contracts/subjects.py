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


def last_token(subject: str) -> str:
    """The workspace (or stage) a subject belongs to."""
    return subject.rpartition(".")[2]


INGEST_AUDIO: Final = SubjectPattern("mumu.ingest.audio")
INGEST_TEXT: Final = SubjectPattern("mumu.ingest.text")
AUDIO_READY: Final = SubjectPattern("mumu.audio.ready")
TRANSCRIPT_PARTIAL: Final = SubjectPattern("mumu.transcript.partial")
TRANSCRIPT_FINAL: Final = SubjectPattern("mumu.transcript.final")
ANSWER_DELTA: Final = SubjectPattern("mumu.answer.delta")
ANSWER_FINAL: Final = SubjectPattern("mumu.answer.final")
PERSISTED: Final = SubjectPattern("mumu.persisted")
ERROR: Final = SubjectPattern("mumu.error")
CONTROL_CANCEL: Final = SubjectPattern("mumu.control.cancel")
CONTROL_SHRED: Final = SubjectPattern("mumu.control.shred")
"""The workspace was crypto-shredded: persist replicas drop its cached data keys."""
DLQ: Final = SubjectPattern("mumu.dlq")
"""Dead letters: the last token is the stage name, not a workspace."""

ALL_PATTERNS: Final[tuple[SubjectPattern, ...]] = (
    INGEST_AUDIO,
    INGEST_TEXT,
    AUDIO_READY,
    TRANSCRIPT_PARTIAL,
    TRANSCRIPT_FINAL,
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

# Per workspace (created with the workspace; docs/security.md says why)
INTAKE_STREAM_PREFIX: Final = "MUMU_INTAKE_"
"""``MUMU_INTAKE_<ws>`` captures ``mumu.ingest.*.<ws>``: its own dedupe window, so no
workspace can suppress another's message through ``Nats-Msg-Id``; MUMU_INGEST sources it."""
UPLOAD_BUCKET_PREFIX: Final = "mumu-upload-"
"""``mumu-upload-<ws>``: a producer's large audio, readable and writable by that workspace."""
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


def intake_stream(workspace: str) -> str:
    """The intake stream of one workspace."""
    return INTAKE_STREAM_PREFIX + _token(workspace)


def upload_bucket(workspace: str) -> str:
    """The Object Store bucket for one workspace's large uploads."""
    return UPLOAD_BUCKET_PREFIX + _token(workspace)


def producer_inbox_prefix(workspace: str) -> str:
    """The inbox prefix a producer of ``workspace`` connects with."""
    return f"{PRODUCER_INBOX}.{_token(workspace)}"


def service_inbox_prefix(role: str) -> str:
    """The inbox prefix of one service role (no producer may subscribe to it)."""
    return f"{SERVICE_INBOX}.{_token(role)}"

