"""The websocket driver of `mumu bench live`: live streams and uploads through a real
gateway, the way its clients (the demo page, `mumu ask`) use it.

A stream is one socket (``/api/ws?token=``, one live stream per socket at a time):
``{"type":"stream.start","format":"pcm16","sample_rate":16000,...}``, the gateway's
``stream.started``, binary PCM16 frames, ``{"type":"stream.end"}``. An upload is
``POST /api/ask`` (multipart ``audio``), its results read on a socket of its session
opened (and ``ready``) before the upload began. On every socket the result messages
(``transcript.partial`` / ``transcript.final`` / ``answer.delta`` / ``answer.final`` /
``error``) go to ``on_event`` with the monotonic time the frame was read from the socket;
the gateway's control messages (``ready``, ``stream.started`` ...) answer the driver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mumu.bench.live_driver import OnEvent, Uploaded
from mumu.contracts.event_types import EventType
from mumu.contracts.options import AudioOptions

log = logging.getLogger("mumu.bench.live")

KINDS = {EventType.TRANSCRIPT_PARTIAL: "partial", EventType.TRANSCRIPT_FINAL: "final",
         EventType.ANSWER_DELTA: "delta", EventType.ANSWER_FINAL: "answer",
         EventType.ERROR: "error"}
REPLY_TIMEOUT = 30.0
"""Seconds the gateway has to answer ``stream.start`` (and a new socket to be ``ready``)."""


class GatewayRefusedError(RuntimeError):
    """The gateway answered with an error where the benchmark needs it to go on."""


@dataclass
class _Socket:
    ws: aiohttp.ClientWebSocketResponse
    control: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    async def reply(self, *wanted: str) -> dict[str, Any]:
        """The next control message of a ``wanted`` type; an ``error`` raises."""
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                message = await self.control.get()
                if message.get("type") == EventType.ERROR:
                    raise GatewayRefusedError(f"{message.get('code')}: {message.get('message')}")
                if message.get("type") in wanted:
                    return message


class WsStream:
    """One live stream on its own socket (``LiveStreamHandle``); ``sent`` counts frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, request_id: str,
                 sent: Callable[[], None]) -> None:
        self._ws = ws
        self._sent = sent
        self.request_id = request_id

    async def send(self, pcm: bytes) -> None:
        await self._ws.send_bytes(pcm)
        self._sent()

    async def end(self, pcm: bytes = b"") -> None:
        if pcm:
            await self.send(pcm)
        await self._ws.send_json({"type": "stream.end"})


class WsLiveDriver:
    """Streams and uploads through the gateway at ``base_url``; ``token_for(session_id)``
    is a session token of the benchmark's workspace (what ``POST /api/session`` gives)."""

    name = "websocket"

    def __init__(self, http: aiohttp.ClientSession, base_url: str,
                 token_for: Callable[[str], str], on_event: OnEvent) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token_for = token_for
        self.on_event = on_event
        self._sockets: dict[str, _Socket] = {}
        self.frames_sent = 0
        """Binary frames of audio sent, every stream together."""

    async def open(self, session_id: str, options: AudioOptions) -> WsStream:
        socket = await self._socket(session_id)
        request_id = f"live{uuid.uuid4().hex[:16]}"
        await socket.ws.send_json({
            "type": "stream.start", "format": "pcm16", "sample_rate": 16_000,
            "language": options.language, "prompt": options.prompt,
            "answer": options.answer, "word_timestamps": options.word_timestamps,
            "request_id": request_id})
        started = await socket.reply("stream.started")
        if started.get("request_id") != request_id:
            raise GatewayRefusedError(f"stream.started of another stream: {started}")
        return WsStream(socket.ws, request_id, self._count_frame)

    async def upload(self, session_id: str, audio: bytes, options: AudioOptions
                     ) -> Uploaded:
        await self._socket(session_id)  # its results' way in, subscribed before the ask
        request_id = uuid.uuid4().hex
        form = aiohttp.FormData()
        form.add_field("audio", audio, filename="clip.wav", content_type="audio/wav")
        for name, value in options.model_dump(exclude_none=True).items():
            form.add_field(name, json.dumps(value) if isinstance(value, bool) else str(value))
        headers = {"Authorization": f"Bearer {self.token_for(session_id)}"}
        sent = time.monotonic()
        async with self.http.post(f"{self.base_url}/api/ask",
                                  params={"request_id": request_id},
                                  data=form, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 202:
                raise GatewayRefusedError(f"POST /api/ask: {resp.status} {body[:300]}")
        return Uploaded(request_id, sent)

    def _count_frame(self) -> None:
        self.frames_sent += 1

    async def release(self, session_id: str) -> None:
        socket = self._sockets.pop(session_id, None)
        if socket is not None:
            await self._close(socket)

    async def close(self) -> None:
        sockets = list(self._sockets.values())
        self._sockets.clear()
        for socket in sockets:
            await self._close(socket)

    async def _socket(self, session_id: str) -> _Socket:
        """The session's socket, opened and ``ready`` (one per session)."""
        socket = self._sockets.get(session_id)
        if socket is not None:
            return socket
        url = (self.base_url.replace("http", "ws", 1) + "/api/ws")
        ws = await self.http.ws_connect(url, params={"token": self.token_for(session_id)},
                                        max_msg_size=0)
        socket = _Socket(ws)
        socket.reader = asyncio.create_task(self._read(socket))
        self._sockets[session_id] = socket
        await socket.reply("ready")
        return socket

    async def _read(self, socket: _Socket) -> None:
        async for msg in socket.ws:
            at = time.monotonic()  # read from the socket: the result's arrival
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            body = json.loads(msg.data)
            kind = KINDS.get(body.get("type"))
            if kind is not None:
                self.on_event(kind, body, at)
            if kind is None or (kind == "error" and body.get("stage") == "gateway"):
                socket.control.put_nowait(body)  # the gateway answering the client
        code = socket.ws.close_code
        if code not in (None, aiohttp.WSCloseCode.OK):
            log.warning("the gateway closed a benchmark socket: %s", code)
        # whoever waits for the gateway's answer on this socket gets none
        socket.control.put_nowait({"type": EventType.ERROR, "code": "closed",
                                   "message": f"the socket closed ({code})"})

    @staticmethod
    async def _close(socket: _Socket) -> None:
        await socket.ws.close()
        if socket.reader is not None:
            await socket.reader

