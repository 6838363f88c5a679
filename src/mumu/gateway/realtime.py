"""``GET /v1/realtime?intent=transcription``: OpenAI Realtime transcription sessions over
a websocket, served by a live stream (``gateway.live``) per session.

The bearer token is a workspace API key, as on the other ``/v1`` routes. The socket takes
one of the gateway's socket places, and a running stream one of its audio places. Audio comes as
base64 PCM16 at 24 kHz (``input_audio_buffer.append``), is resampled to 16 kHz and
published as the stream's chunks. With ``server_vad`` (the default) each utterance the
transcribe stage ends is an item: ``speech_started`` at its first partial, deltas as its
committed text grows, then ``speech_stopped``, ``committed`` and ``completed`` at its final.
With ``turn_detection: null`` each ``input_audio_buffer.commit`` ends the stream and its
utterances make one item, completed at the stage's ``stream.ended`` (``realtime_items``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from typing import Any

import av
import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from mumu.contracts.events import new_id
from mumu.gateway.deps import DEPS, GatewayDeps
from mumu.gateway.errors import ApiError, retry_fields
from mumu.gateway.hub import ResultEvent
from mumu.gateway.live import LiveOut
from mumu.gateway.realtime_events import (
    INPUT_RATE,
    ConfigError,
    SessionConfig,
    error_event,
    server_event,
)
from mumu.gateway.realtime_items import Items
from mumu.gateway.websocket import SOCKETS

log = logging.getLogger("mumu.gateway.realtime")
OUTGOING = 2_000
"""Server events queued for a client that reads slowly; past it the socket closes (1013)."""


async def realtime(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if request.query.get("intent") != "transcription":
        raise ApiError(400, "invalid_request_error", "this server has Realtime transcription "
                       "sessions only: connect with ?intent=transcription")
    workspace_id = (await deps.key_of(request)).workspace_id
    places = deps.admission.sockets
    places.enter(workspace_id)
    try:
        gw = deps.settings.gateway
        ws = web.WebSocketResponse(max_msg_size=gw.max_frame_bytes, heartbeat=gw.heartbeat,
                                   compress=False)
        await ws.prepare(request)
        request.app[SOCKETS][ws] = None  # closed on shutdown
        deps.metrics.sockets.inc()
        try:
            beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
            await RealtimeSession(ws, deps, workspace_id, beta=beta).run()
        finally:
            deps.metrics.sockets.dec()
            request.app[SOCKETS].pop(ws, None)
        return ws
    finally:
        places.leave(workspace_id)


class RealtimeSession:
    def __init__(self, ws: web.WebSocketResponse, deps: GatewayDeps, workspace_id: str, *,
                 beta: bool) -> None:
        self.ws = ws
        self.deps = deps
        self.workspace_id = workspace_id
        self.session_id = f"rt-{new_id()}"
        self.beta = beta
        self.config = SessionConfig()
        self.out: LiveOut | None = None
        self._resampler: av.AudioResampler | None = None
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTGOING)
        self._too_slow = False
        self.items = Items(self.send)

    def send(self, event: dict[str, Any]) -> None:
        if self._too_slow:
            return
        try:
            self._outgoing.put_nowait(event)
        except asyncio.QueueFull:  # what is queued is dropped; the writer closes the socket
            log.warning("realtime client fell %d events behind; closing", OUTGOING)
            self._too_slow = True
            while not self._outgoing.empty():
                self._outgoing.get_nowait()
            self._outgoing.put_nowait(None)

    async def push(self, event: ResultEvent) -> None:
        """A hub sink: this session's results."""
        self.items.on_result(event)

    async def run(self) -> None:
        self.deps.hub.subscribe(self.workspace_id, self.session_id, self)
        writer = asyncio.create_task(self._write())
        reader = asyncio.create_task(self._read())
        watchdog = asyncio.create_task(self._watch())
        try:
            kind = "transcription_session.created" if self.beta else "session.created"
            self.send(server_event(kind, session=self._session()))
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.deps.hub.unsubscribe(self.workspace_id, self.session_id, self)
            reader.cancel()
            watchdog.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
            await self._end_stream()
            self.items.close()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if not self.ws.closed:
                await self.ws.close(code=WSCloseCode.OK)

    async def _watch(self) -> None:
        """A stream without audio for ``stream_idle_timeout`` is ended (its last utterance
        becomes final) with a ``stream_timeout`` error; the session goes on."""
        timeout = self.deps.settings.gateway.stream_idle_timeout
        while True:
            out = self.out
            idle = time.monotonic() - out.last_audio if out is not None else 0.0
            if out is not None and idle >= timeout:
                self.send(error_event("stream_timeout", f"no audio for {timeout:g} s: the "
                                      "stream is ended and what was said is final"))
                await self._end_stream()
                idle = 0.0
            await asyncio.sleep(max(0.05, timeout - idle))

    def _session(self) -> dict[str, Any]:
        body = self.config.beta() if self.beta else self.config.ga()
        return {"id": self.session_id, **body}

    async def _write(self) -> None:
        while (event := await self._outgoing.get()) is not None:
            await self.ws.send_str(json.dumps(event))
        await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"client too slow")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.send(error_event("invalid_event", "events are JSON text frames"))
            elif msg.type == WSMsgType.ERROR:
                return

    async def _on_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            self.send(error_event("invalid_json", "an event is a JSON object"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.send(error_event("invalid_event", 'an event is an object with a "type"'))
            return
        kind, client_event = event["type"], event.get("event_id")
        handler = {
            "transcription_session.update": self._update,
            "session.update": self._update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
        }.get(kind)
        if handler is None:
            self.send(error_event("unknown_event", f"event type {kind[:64]!r} is not served "
                                  "by a transcription session", client_event, "type"))
            return
        try:
            await handler(event)
        except ConfigError as exc:
            self.send(error_event("invalid_value", str(exc), client_event, exc.param))
        except ApiError as exc:  # a quota refusal says when to retry, as over /api/ws
            event = error_event(exc.code, exc.message, client_event)
            event["error"].update(retry_fields(exc))
            self.send(event)

    async def _update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise ConfigError("session", "session is an object")
        if event["type"] == "transcription_session.update":
            self.config.update_beta(session)
        else:
            self.config.update_ga(session)
        await self._end_stream()  # the next audio is transcribed with the new settings
        kind = event["type"].replace(".update", ".updated")
        self.send(server_event(kind, session=self._session()))

    async def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        try:
            raw = base64.b64decode(audio if isinstance(audio, str) else "", validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("audio", "audio is base64 PCM16 (24 kHz mono)") from None
        if not raw:
            return
        if self.out is None:
            self.deps.limiter.take(self.workspace_id)
            self.deps.lag.guard()
            places = self.deps.admission.audio_buffers  # held while the stream runs
            places.enter(self.workspace_id)
            try:
                self.out = await self.deps.live.open(
                    self.workspace_id, self.session_id, self.config.options())
            except BaseException:
                places.leave(self.workspace_id)
                raise
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
            self.items.stream_started(self.out, manual=not self.config.server_vad)
        try:
            await self.out.write(self._resample(raw))
        except ApiError as exc:  # past the longest audio (ended there), or not stored
            self.send(error_event(exc.code, exc.message, event.get("event_id")))
            await self._end_stream()

    def _resample(self, raw: bytes | None) -> bytes:
        """24 kHz PCM16 to 16 kHz (``None``: what the resampler holds back)."""
        if self._resampler is None:
            return b""
        frame = None
        if raw is not None:
            samples = np.frombuffer(raw[:len(raw) - len(raw) % 2], dtype="<i2")
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = INPUT_RATE
        return b"".join(f.to_ndarray().tobytes() for f in self._resampler.resample(frame))

    async def _commit(self, event: dict[str, Any]) -> None:
        if self.out is None:
            raise ApiError(400, "input_audio_buffer_commit_empty",
                           "the input audio buffer is empty: append audio first")
        await self._end_stream()

    async def _clear(self, _: dict[str, Any]) -> None:
        if self.out is not None:
            self.items.forget(self.out.stream_id)
            await self._end_stream()
        self.send(server_event("input_audio_buffer.cleared"))

    async def _end_stream(self) -> None:
        out, self.out = self.out, None
        if out is None:
            return
        tail, self._resampler = self._resample(None), None  # before a new stream may start
        with contextlib.suppress(ApiError):
            await out.write(tail)
        try:
            await out.end()
        except ApiError as exc:
            self.send(error_event(exc.code, exc.message))
        finally:
            self.deps.admission.audio_buffers.leave(self.workspace_id)
        self.items.stream_ended(out)
