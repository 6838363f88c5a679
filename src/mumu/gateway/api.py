"""HTTP routes of the client API: sessions, asks, history.

Requests are read into the models of ``gateway.models`` and answered with them; the
OpenAPI document is generated from the same models.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel

from mumu.contracts.event_types import TERMINAL_FOR_ASK, TERMINAL_FOR_TRANSCRIPT, EventType
from mumu.contracts.events import new_id
from mumu.gateway.asks import Asked, audio_content_type
from mumu.gateway.binding import form_body, json_body, query
from mumu.gateway.deps import DEPS
from mumu.gateway.errors import ApiError
from mumu.gateway.hangup import connection_of
from mumu.gateway.models import (
    AskAccepted,
    AskQuery,
    AskResult,
    AudioAskForm,
    History,
    SessionCreated,
    SessionRequest,
    TextAskBody,
)
from mumu.gateway.tokens import SessionClaims
from mumu.gateway.waiter import RequestWaiter, run_and_wait

log = logging.getLogger("mumu.gateway.api")


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


async def create_session(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    owner = await deps.key_of(request)
    workspace_id = owner.workspace_id
    deps.limiter.take(workspace_id)
    wanted = SessionRequest()
    if request.can_read_body and request.content_type == "application/json":
        wanted = await json_body(request, SessionRequest)
    # a given id continues a session of this workspace (ids are per workspace)
    session_id = wanted.session_id or new_id()
    token, expires = deps.signer.issue(workspace_id, session_id, key_id=owner.key_id)
    return respond(SessionCreated(
        session_id=session_id, token=token,
        expires_at=datetime.fromtimestamp(expires, UTC).isoformat(),
    ))


async def _read_ask(request: web.Request) -> TextAskBody | AudioAskForm:
    if request.content_type == "application/json":
        body = await json_body(request, TextAskBody)
        if len(body.text) > request.app[DEPS].settings.gateway.max_text_chars:
            raise ApiError(413, "too_large", "the question is too long")
        return body
    if request.content_type == "multipart/form-data":
        return await form_body(request, AudioAskForm)
    raise ApiError(
        415, "unsupported_media_type",
        "send application/json {\"text\": ...} or multipart/form-data with an \"audio\" file",
    )


async def ask(request: web.Request) -> web.Response:
    """A waiting ask (``?wait=true``) holds one of the gateway's waiting places from
    before its body is read until it is answered (``gateway.admission``)."""
    deps = request.app[DEPS]
    claims = await deps.session(request)
    asked_for = query(request, AskQuery)
    if asked_for.wait:
        with deps.admission.waiting.held(claims.workspace_id):
            return await _ask(request, claims, asked_for)
    return await _ask(request, claims, asked_for)


async def _ask(request: web.Request, claims: SessionClaims, asked_for: AskQuery) -> web.Response:
    deps = request.app[DEPS]
    wait, rid = asked_for.wait, asked_for.request_id
    asked = await _read_ask(request)
    audio = asked if isinstance(asked, AudioAskForm) else None
    content_type = audio_content_type(audio.audio) if audio is not None else ""
    deps.limiter.take(claims.workspace_id)
    deps.lag.guard()
    ws, sid = claims.workspace_id, claims.session_id

    async def publish() -> Asked:
        if isinstance(asked, TextAskBody):
            deps.metrics.asks.labels("text").inc()
            return await deps.asker.ask_text(ws, sid, asked.text, asked.language, rid)
        deps.metrics.asks.labels("audio").inc()
        return await deps.asker.ask_audio(
            ws, sid, asked.audio, content_type, asked.options(), request_id=rid)

    if not wait:
        published = await publish()
        return respond(AskAccepted(request_id=published.request_id, session_id=sid,
                                   duplicate=published.duplicate), status=202)
    transcript_only = audio is not None and not audio.answer
    waiter = await run_and_wait(
        deps.hub, deps.nc, ws, sid,
        terminal=TERMINAL_FOR_TRANSCRIPT if transcript_only else TERMINAL_FOR_ASK,
        publish=publish, seconds=deps.settings.gateway.wait_timeout, audio=audio is not None,
        connected=connection_of(request),
    )
    return respond(_full_result(waiter, sid))


def _full_result(waiter: RequestWaiter, session_id: str) -> AskResult:
    transcript = waiter.first(EventType.TRANSCRIPT_FINAL)
    answer = waiter.first(EventType.ANSWER_FINAL)
    said = transcript.body if transcript else {}
    body = answer.body if answer else {}
    timings: dict[str, float | None] = {
        "transcript": waiter.arrived.get(EventType.TRANSCRIPT_FINAL),
        "first_delta": waiter.arrived.get(EventType.ANSWER_DELTA),
        "answer": waiter.arrived.get(EventType.ANSWER_FINAL),
        "transcribe_compute": said.get("compute_seconds"),
        "time_to_first_token": body.get("time_to_first_token"),
    }
    return AskResult(
        request_id=waiter.request_id or "",
        session_id=session_id,
        transcript=said.get("text") if transcript else body.get("question"),
        language=said.get("language") or body.get("language"),
        answer=body.get("text"),
        cancelled=bool(body.get("cancelled", False)),
        timings={k: round(v, 4) for k, v in timings.items() if v is not None},
    )


async def history(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    claims = await deps.session(request)
    session_id = request.match_info["id"]
    if session_id != claims.session_id:
        raise ApiError(403, "forbidden", "this token is for another session")
    deps.limiter.take(claims.workspace_id)
    items = await deps.history(claims.workspace_id, session_id)
    return respond(History(session_id=session_id, items=items))
