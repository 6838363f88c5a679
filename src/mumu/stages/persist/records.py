"""From a final transcript or answer on NATS to the record the database stores."""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, Event, TranscriptFinal
from mumu.db.pool import workspace_uuid
from mumu.db.records import AnswerRecord, Record, TranscriptRecord
from mumu.runtime import PermanentError


def parse_event(subject: str, data: bytes) -> TranscriptFinal | AnswerFinal:
    model: type[TranscriptFinal] | type[AnswerFinal]
    if subjects.TRANSCRIPT_FINAL.matches(subject):
        model = TranscriptFinal
    elif subjects.ANSWER_FINAL.matches(subject):
        model = AnswerFinal
    else:
        raise PermanentError("schema_violation", f"persist does not store {subject}")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PermanentError("schema_violation", f"not a valid {model.__name__}: {detail}") from exc


def check_workspace(event: Event, subject_workspace: str) -> str:
    """The workspace UUID of the subject; the body must name the same workspace."""
    try:
        ws = workspace_uuid(subject_workspace)
    except ValueError:
        raise PermanentError(
            "unknown_workspace", f"workspace {subject_workspace!r} is not a UUID"
        ) from None
    if event.workspace_id not in (subject_workspace, ws):
        raise PermanentError(
            "schema_violation",
            f"event names workspace {event.workspace_id}, its subject {subject_workspace}",
        )
    return ws


def to_record(event: TranscriptFinal | AnswerFinal) -> Record:
    try:
        event_id = uuid.UUID(event.event_id)
    except ValueError:
        raise PermanentError(
            "schema_violation", f"event_id {event.event_id!r} is not a UUID"
        ) from None
    if isinstance(event, TranscriptFinal):
        return TranscriptRecord(
            event_id=event_id, request_id=event.request_id, session_id=event.session_id,
            text=event.text, language=event.language, duration=event.duration,
            model=event.model, occurred_at=event.occurred_at,
        )
    return AnswerRecord(
        event_id=event_id, request_id=event.request_id, session_id=event.session_id,
        question=event.question, text=event.text, language=event.language, model=event.model,
        cancelled=event.cancelled, prompt_tokens=event.usage.prompt_tokens,
        completion_tokens=event.usage.completion_tokens, total_seconds=event.total_seconds,
        occurred_at=event.occurred_at,
    )
