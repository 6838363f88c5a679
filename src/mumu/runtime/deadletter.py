"""Dead letters (``mumu.dlq.<stage>.<ws>``) and the client-facing error event."""

from __future__ import annotations

import json
from collections.abc import Mapping

from nats.aio.msg import Msg
from pydantic import BaseModel

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import ErrorCode, Event, PipelineError, derive_id
from mumu.contracts.ids import id_or_none
from mumu.runtime.client_errors import client_message
from mumu.runtime.messages import Outbound

UNKNOWN = "unknown"


def request_identity(msg: Msg, event: BaseModel | None) -> tuple[str, str]:
    """(request_id, session_id) of a message, from its event, headers or raw JSON."""
    if isinstance(event, Event):
        return event.request_id, event.session_id
    hdrs = msg.headers or {}
    request_id = id_or_none(hdrs.get(h.REQUEST_ID))
    session_id = id_or_none(hdrs.get(h.SESSION))
    if request_id is None or session_id is None:
        try:
            raw = json.loads(msg.data)
        except (ValueError, UnicodeDecodeError):
            raw = None
        if isinstance(raw, dict):
            request_id = request_id or id_or_none(raw.get("request_id"))
            session_id = session_id or id_or_none(raw.get("session_id"))
    return request_id or UNKNOWN, session_id or UNKNOWN


def letter_workspace(subject: str) -> str:
    """The workspace token of a dead letter of a message on ``subject``: the subject's
    last token when it is a valid id, else ``subjects.DLQ_NO_WORKSPACE``."""
    return id_or_none(subjects.last_token(subject)) or subjects.DLQ_NO_WORKSPACE


HEADROOM = 1024
"""Bytes kept free for what the publisher adds (message id, trace context) and framing."""


def _header_bytes(headers: Mapping[str, str]) -> int:
    return len("NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items())


def dead_letter(
    msg: Msg, *, stage: str, code: ErrorCode, reason: str, stream: str, sequence: int,
    deliveries: int, max_payload: int, redact: bool = False,
) -> Outbound:
    """The original payload with its headers kept under ``Mumu-Orig-`` and the reason added.

    ``redact``: the letter carries neither the body nor the original headers (the
    message's workspace was shredded: nothing of its content may be kept), marked
    ``Mumu-Dlq-Body-Omitted: true`` like a letter too large for its body.

    A letter that would not fit in ``max_payload`` (nor in ``subjects.DLQ_MAX_LETTER``,
    the stream's ``max_msg_size``) goes without the body (and, if even
    that is too big, without the original headers): ``Mumu-Dlq-Body-Omitted: true`` and
    ``Mumu-Dlq-Body-Size``; the stream and sequence headers say where the original is.
    """
    original: Mapping[str, str] = msg.headers or {}
    headers = {f"{h.DLQ_ORIGINAL_PREFIX}{k}": v for k, v in original.items()}
    ours = {
        h.DLQ_STAGE: stage,
        h.DLQ_CODE: code,
        h.DLQ_REASON: reason[:1024],
        h.DLQ_SUBJECT: msg.subject,
        h.DLQ_STREAM: stream,
        h.DLQ_SEQUENCE: str(sequence),
        h.DLQ_DELIVERIES: str(deliveries),
    }
    headers.update(ours)
    payload = msg.data
    max_payload = min(max_payload, subjects.DLQ_MAX_LETTER)
    if redact:
        headers = {**ours, h.DLQ_BODY_OMITTED: "true", h.DLQ_BODY_SIZE: str(len(payload))}
        payload = b""
    elif len(payload) + _header_bytes(headers) + HEADROOM > max_payload:
        omitted = {h.DLQ_BODY_OMITTED: "true", h.DLQ_BODY_SIZE: str(len(payload))}
        headers.update(omitted)
        payload = b""
        if _header_bytes(headers) + HEADROOM > max_payload:
            headers = {**ours, **omitted}
    return Outbound(
        subject=subjects.DLQ.stage(stage).for_workspace(letter_workspace(msg.subject)),
        payload=payload,
        msg_id=f"dlq:{stage}:{stream}:{sequence}",
        headers=headers,
    )


def error_event(
    msg: Msg, event: BaseModel | None, *, stage: str, code: ErrorCode, message: str,
    workspace_id: str, sequence: int,
) -> Outbound | None:
    """The ``mumu.error.<ws>`` event, or None when the subject names no valid workspace.
    Its message is meant for the client (``client_errors``), not ``message`` itself."""
    if id_or_none(workspace_id) is None:
        return None
    request_id, session_id = request_identity(msg, event)
    err = PipelineError(
        event_id=derive_id(workspace_id, request_id, stage, "error", sequence),
        request_id=request_id,
        workspace_id=workspace_id,
        session_id=session_id,
        stage=stage,
        code=code,
        message=client_message(code, message),  # the full reason: logs and dead letter only
        subject=msg.subject,
    )
    return Outbound.of(subjects.ERROR.for_workspace(workspace_id), err)
