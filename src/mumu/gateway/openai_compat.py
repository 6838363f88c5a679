"""The OpenAI audio API (``/v1/audio/transcriptions``, ``/v1/audio/translations``,
``/v1/models``), served by ingest → transcribe.

The bearer token is a workspace API key (what the official ``openai`` client sends as
``api_key``). Each call is its own session, so it never mixes with a chat session.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from mumu.contracts.event_types import TERMINAL_FOR_TRANSCRIPT, EventType
from mumu.contracts.events import new_id
from mumu.gateway.asks import Asked, audio_content_type
from mumu.gateway.binding import form_body
from mumu.gateway.deps import DEPS
from mumu.gateway.errors import ApiError
from mumu.gateway.hangup import connection_of
from mumu.gateway.models import (
    ModelCard,
    ModelList,
    Transcription,
    TranscriptionForm,
    TranslationForm,
    VerboseSegment,
    VerboseTranscription,
    VerboseWord,
)
from mumu.gateway.openai_stream import stream_transcription
from mumu.gateway.waiter import run_and_wait

INVALID = "invalid_request_error"
"""OpenAI's error code for a request that does not fit the API."""


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: list[dict[str, Any]]) -> str:
    blocks = [
        f"{n}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: list[dict[str, Any]]) -> str:
    blocks = [
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text'].strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def verbose(final: dict[str, Any], words: bool) -> VerboseTranscription:
    segments = final.get("segments") or []
    return VerboseTranscription(
        task=final.get("task", "transcribe"),
        language=final.get("language") or "",
        duration=final.get("duration") or 0.0,
        text=final.get("text", ""),
        segments=[
            VerboseSegment(
                id=s["id"], start=s["start"], end=s["end"], text=s["text"],
                avg_logprob=s.get("avg_logprob") or 0.0,
                no_speech_prob=s.get("no_speech_prob") or 0.0,
            )
            for s in segments
        ],
        words=[
            VerboseWord(word=w["word"], start=w["start"], end=w["end"])
            for s in segments for w in (s.get("words") or [])
        ] if words else None,
    )


async def transcriptions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/transcriptions``."""
    return await _speech_to_text(request, TranscriptionForm)


async def translations(request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/translations``: English text, whatever the spoken language."""
    return await _speech_to_text(request, TranslationForm)


async def models(request: web.Request) -> web.Response:
    """``GET /v1/models``: what ``model`` may name (any value is accepted; the gateway's
    transcription model answers): OpenAI's ``whisper-1`` and the deployment's own name."""
    deps = request.app[DEPS]
    await deps.workspace_of(request)
    created = int(time.time())  # no creation date is known for a local model
    names = dict.fromkeys(["whisper-1", deps.settings.transcribe.model])
    return web.json_response(ModelList(
        data=[ModelCard(id=name, created=created) for name in names]).model_dump())


async def _speech_to_text(
    request: web.Request, form_model: type[TranscriptionForm] | type[TranslationForm],
) -> web.StreamResponse:
    """Holds one of the gateway's waiting places from before the upload is read until
    the transcript is sent (``gateway.admission``)."""
    deps = request.app[DEPS]
    workspace_id = await deps.workspace_of(request)
    with deps.admission.waiting.held(workspace_id):
        return await _transcribe(request, workspace_id, form_model)


async def _transcribe(
    request: web.Request, workspace_id: str,
    form_model: type[TranscriptionForm] | type[TranslationForm],
) -> web.StreamResponse:
    deps = request.app[DEPS]
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a `file`")
    form = await form_body(request, form_model, code=INVALID)
    content_type = audio_content_type(form.file)
    deps.limiter.take(workspace_id)
    deps.lag.guard()
    options = form.options()
    session_id = f"oai-{new_id()}"

    async def publish() -> Asked:
        deps.metrics.asks.labels("transcription").inc()
        return await deps.asker.ask_audio(workspace_id, session_id, form.file, content_type,
                                          options)

    if isinstance(form, TranscriptionForm) and form.stream:
        return await stream_transcription(request, deps, workspace_id, session_id, publish)
    waiter = await run_and_wait(
        deps.hub, deps.nc, workspace_id, session_id,
        terminal=TERMINAL_FOR_TRANSCRIPT, publish=publish,
        seconds=deps.settings.gateway.wait_timeout, audio=True,
        connected=connection_of(request),
    )
    final = waiter.first(EventType.TRANSCRIPT_FINAL)
    body = final.body if final else {}
    fmt = form.response_format
    if fmt == "json":
        return web.json_response(Transcription(text=body.get("text", "")).model_dump())
    if fmt == "verbose_json":
        return web.json_response(verbose(body, options.word_timestamps).dump())
    if fmt == "text":
        return web.Response(text=body.get("text", ""), content_type="text/plain")
    segments = body.get("segments") or []
    if fmt == "srt":
        return web.Response(text=to_srt(segments), content_type="application/x-subrip")
    return web.Response(text=to_vtt(segments), content_type="text/vtt")
