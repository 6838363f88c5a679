"""HTTP routes of the client API: sessions, asks, history."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mumu.contracts.event_types import TERMINAL_FOR_ASK
from mumu.contracts.events import new_id
from mumu.gateway.asks import AudioOptions, audio_content_type
from mumu.gateway.auth import session_claims
from mumu.gateway.deps import DEPS
from mumu.gateway.errors import ApiError, read_form
from mumu.gateway.waiter import RequestWaiter, run_and_wait

log = logging.getLogger("mumu.gateway.api")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", "the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


async def create_session(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    workspace_id = await deps.workspace_of(request)
    deps.limiter.take(workspace_id)
    session_id = new_id()
    if request.can_read_body and request.content_type == "application/json":
        body = await _json_object(request)
        wanted = body.get("session_id")
        if wanted is not None:
            if not isinstance(wanted, str) or not _ID.match(wanted):
                raise ApiError(400, "bad_request", "session_id: 1-64 of A-Z a-z 0-9 _ -")
            session_id = wanted  # continue a session of this workspace (ids are per workspace)
    token, expires = deps.signer.issue(workspace_id, session_id)
    return web.json_response(
        {
            "session_id": session_id,
            "token": token,
            "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
        }
    )


async def _read_ask(request: web.Request) -> tuple[str | None, bytes | None, str | None]:
    """(text, audio, language) of a JSON or multipart ask."""
    deps = request.app[DEPS]
    if request.content_type == "application/json":
        body = await _json_object(request)
        text, language = body.get("text"), body.get("language")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "bad_request", 'JSON asks need a non-empty "text"')
        if len(text) > deps.settings.gateway.max_text_chars:
            raise ApiError(413, "too_large", "the question is too long")
        if language is not None and not isinstance(language, str):
            raise ApiError(400, "bad_request", '"language" is a string')
        return text, None, language
    if request.content_type == "multipart/form-data":
        form = await read_form(request)
        audio = form.get("audio")
        if not isinstance(audio, web.FileField):
            raise ApiError(400, "bad_request", 'multipart asks need an "audio" file field')
        data = await asyncio.to_thread(audio.file.read)
        language = form.get("language")
        return None, data, language if isinstance(language, str) and language else None
    raise ApiError(
        415, "unsupported_media_type",
        "send application/json {\"text\": ...} or multipart/form-data with an \"audio\" file",
    )


def _wait(request: web.Request) -> bool:
    value = request.query.get("wait", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "bad_request", "wait is true or false")
    return value in ("true", "1")


async def ask(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    claims = session_claims(request, deps.signer)
    wait = _wait(request)
    text, audio, language = await _read_ask(request)
    content_type = audio_content_type(audio) if audio is not None else None
    deps.limiter.take(claims.workspace_id)
    deps.lag.guard()
    ws, sid = claims.workspace_id, claims.session_id

    async def publish() -> str:
        if audio is not None and content_type is not None:
            deps.metrics.asks.labels("audio").inc()
            options = AudioOptions(language=language)
            return await deps.asker.ask_audio(ws, sid, audio, content_type, options)
        deps.metrics.asks.labels("text").inc()
        return await deps.asker.ask_text(ws, sid, text or "", language)

    if not wait:
        request_id = await publish()
        return web.json_response({"request_id": request_id, "session_id": sid}, status=202)
    waiter = await run_and_wait(
        deps.hub, deps.nc, ws, sid,
        terminal=TERMINAL_FOR_ASK, publish=publish,
        seconds=deps.settings.gateway.wait_timeout, audio=audio is not None,
    )
    return web.json_response(_full_result(waiter, sid))


def _full_result(waiter: RequestWaiter, session_id: str) -> dict[str, Any]:
    transcript = waiter.first("transcript.final")
    answer = waiter.first("answer.final")
    body = answer.body if answer else {}
    timings: dict[str, float | None] = {
        "transcript": waiter.arrived.get("transcript.final"),
        "first_delta": waiter.arrived.get("answer.delta"),
        "answer": waiter.arrived.get("answer.final"),
        "transcribe_compute": transcript.body.get("compute_seconds") if transcript else None,
        "time_to_first_token": body.get("time_to_first_token"),
    }
    return {
        "request_id": waiter.request_id,
        "session_id": session_id,
        "transcript": transcript.body.get("text") if transcript else body.get("question"),
        "language": (transcript.body.get("language") if transcript else None)
        or body.get("language"),
        "answer": body.get("text"),
        "cancelled": bool(body.get("cancelled", False)),
        "timings": {k: round(v, 4) for k, v in timings.items() if v is not None},
    }


async def history(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    claims = session_claims(request, deps.signer)
    session_id = request.match_info["id"]
    if session_id != claims.session_id:
        raise ApiError(403, "forbidden", "this token is for another session")
    deps.limiter.take(claims.workspace_id)
    items = await deps.history(claims.workspace_id, session_id)
    return web.json_response(
        {"session_id": session_id, "items": [i.model_dump(mode="json") for i in items]}
    )
