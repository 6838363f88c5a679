"""``POST /v1/audio/transcriptions``: the OpenAI audio API, served by ingest → transcribe.

The bearer token is a workspace API key (what the official ``openai`` client sends as
``api_key``). Each call is its own session, so it never mixes with a chat session.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mumu.contracts.event_types import TERMINAL_FOR_TRANSCRIPT
from mumu.contracts.events import new_id
from mumu.gateway.asks import AudioOptions, audio_content_type
from mumu.gateway.deps import DEPS
from mumu.gateway.errors import ApiError, read_form
from mumu.gateway.waiter import run_and_wait

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")


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


def verbose(final: dict[str, Any], words: bool) -> dict[str, Any]:
    segments = final.get("segments") or []
    body: dict[str, Any] = {
        "task": final.get("task", "transcribe"),
        "language": final.get("language"),
        "duration": final.get("duration"),
        "text": final.get("text", ""),
        "segments": [
            {
                "id": s["id"], "seek": 0, "start": s["start"], "end": s["end"], "text": s["text"],
                "tokens": [], "temperature": 0.0,
                "avg_logprob": s.get("avg_logprob") or 0.0, "compression_ratio": 0.0,
                "no_speech_prob": s.get("no_speech_prob") or 0.0,
            }
            for s in segments
        ],
    }
    if words:
        body["words"] = [
            {"word": w["word"], "start": w["start"], "end": w["end"]}
            for s in segments for w in (s.get("words") or [])
        ]
    return body


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value != "" else None


async def transcriptions(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    workspace_id = await deps.workspace_of(request)
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a `file`")
    form = await read_form(request)
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "invalid_request_error", "`file` (the audio file) is required")
    response_format = _field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400, "invalid_request_error",
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
        )
    granularities = form.getall("timestamp_granularities[]", []) + form.getall(
        "timestamp_granularities", []
    )
    if any(g not in GRANULARITIES for g in granularities):
        raise ApiError(400, "invalid_request_error", "timestamp_granularities: segment or word")
    words = "word" in granularities
    if words and response_format != "verbose_json":
        raise ApiError(
            400, "invalid_request_error", "word timestamps need response_format=verbose_json"
        )
    data = await asyncio.to_thread(upload.file.read)
    content_type = audio_content_type(data, upload.content_type)
    deps.limiter.take(workspace_id)
    deps.lag.guard()
    options = AudioOptions(
        language=_field(form, "language"), prompt=_field(form, "prompt"), word_timestamps=words,
        answer=False,  # a transcription: the reason stage does not answer it
    )
    session_id = f"oai-{new_id()}"

    async def publish() -> str:
        deps.metrics.asks.labels("transcription").inc()
        return await deps.asker.ask_audio(workspace_id, session_id, data, content_type, options)

    waiter = await run_and_wait(
        deps.hub, deps.nc, workspace_id, session_id,
        terminal=TERMINAL_FOR_TRANSCRIPT, publish=publish,
        seconds=deps.settings.gateway.wait_timeout, audio=True,
    )
    final = waiter.first("transcript.final")
    body = final.body if final else {}
    if response_format == "json":
        return web.json_response({"text": body.get("text", "")})
    if response_format == "verbose_json":
        return web.json_response(verbose(body, words))
    if response_format == "text":
        return web.Response(text=body.get("text", ""), content_type="text/plain")
    segments = body.get("segments") or []
    if response_format == "srt":
        return web.Response(text=to_srt(segments), content_type="application/x-subrip")
    return web.Response(text=to_vtt(segments), content_type="text/vtt")
