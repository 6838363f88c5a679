"""``stream=true`` on ``/v1/audio/transcriptions``: OpenAI's server-sent events, one
``transcript.text.delta`` per decoded segment as the transcribe stage publishes it, then
one ``transcript.text.done`` with the whole text (the deltas, joined, are that text).

The response starts with the request's first event, not before: audio the pipeline
refuses (undecodable, too long) is answered with the error's own status and JSON body,
as without ``stream``, rather than a 200 whose stream holds only an error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mumu.contracts.event_types import TERMINAL_FOR_TRANSCRIPT, EventType
from mumu.gateway.asks import Asked
from mumu.gateway.deps import GatewayDeps
from mumu.gateway.hangup import ClientGoneError, Connected, connection_of, within
from mumu.gateway.hub import ResultEvent
from mumu.gateway.waiter import RequestWaiter, catch_up, pipeline_error, waiting


@dataclass(eq=False)
class StreamingWaiter(RequestWaiter):
    """A waiter that hands each event on as it arrives."""

    queue: asyncio.Queue[ResultEvent] = field(default_factory=asyncio.Queue)

    def on_event(self, event: ResultEvent) -> None:
        self.queue.put_nowait(event)


def sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class DeltaText:
    """Segments as append-only deltas: each after the first starts with a space."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def delta(self, segment_text: str) -> str | None:
        text = segment_text.strip()
        if not text:
            return None
        self.parts.append(text)
        return text if len(self.parts) == 1 else f" {text}"


async def stream_transcription(
    request: web.Request, deps: GatewayDeps, workspace_id: str, session_id: str,
    publish: Callable[[], Awaitable[Asked]],
) -> web.StreamResponse:
    """Publish, then stream the request's segments and its final as SSE. A pipeline error
    before the first segment is the response (its status, JSON); after it, or a timeout,
    it ends the stream as an ``error`` event. A client that hangs up ends it (and its
    waiting place) at once."""
    waiter = StreamingWaiter(terminal=TERMINAL_FOR_TRANSCRIPT)
    async with waiting(deps.hub, deps.nc, workspace_id, session_id, TERMINAL_FOR_TRANSCRIPT,
                       audio=True, waiter=waiter):
        asked = await publish()
        waiter.bind(asked.request_id)
        catching = (asyncio.create_task(catch_up(deps.nc, waiter, workspace_id, 120.0))
                    if asked.duplicate else None)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Request-Id": asked.request_id})
        try:
            await _relay(request, response, waiter, deps.settings.gateway.wait_timeout,
                         connection_of(request))
        except ClientGoneError:
            return response  # no one to end the stream for
        finally:
            if catching is not None:
                catching.cancel()
                await asyncio.gather(catching, return_exceptions=True)
        await response.write_eof()
        return response


async def _relay(request: web.Request, response: web.StreamResponse, waiter: StreamingWaiter,
                 seconds: float, connected: Connected) -> None:
    """Events as SSE until the final; an error before anything was sent is raised (the
    route answers it with its status), after that it is the stream's last event."""
    deadline = time.monotonic() + seconds
    text = DeltaText()

    async def send(payload: dict[str, Any]) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(sse(payload))

    while True:
        try:
            event = await within(waiter.queue.get(), deadline - time.monotonic(), connected,
                                 waiter.request_id)
        except TimeoutError:
            await send({"type": "error", "error": {
                "code": "timeout", "message": f"no transcript within {seconds:g} s",
                "request_id": waiter.request_id}})
            return
        if event.type is EventType.TRANSCRIPT_PARTIAL:
            delta = text.delta(str(event.body.get("segment", {}).get("text", "")))
            if delta is not None:
                await send({"type": "transcript.text.delta", "delta": delta})
        elif event.type is EventType.TRANSCRIPT_FINAL:
            await send({"type": "transcript.text.done", "text": str(event.body.get("text", ""))})
            return
        elif event.type is EventType.ERROR:
            error = pipeline_error(event)
            if not response.prepared:
                raise error
            await send({"type": "error", "error": {
                "code": error.code, "message": error.message, "request_id": waiter.request_id}})
            return
