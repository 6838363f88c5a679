"""The gateway with aiohttp's own websocket writer instead of ``Outbox``, for ``mumu bench
gateway`` to measure what writing raw frames past aiohttp buys (run as
``python -m mumu.bench.gateway_writer``, configured like ``mumu gateway``).

Each socket's frames queue (bounded by ``CLIENT_QUEUE``, a full queue closes the socket as
with ``Outbox``) and its writer task sends them one by one with
``WebSocketResponse.send_frame``, which writes at once and waits for aiohttp's drain when
its buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from aiohttp import WSMsgType, web

from mumu.gateway.app import create_app
from mumu.gateway.outbox import Sender
from mumu.gateway.websocket import SENDER
from mumu.logs import configure_logging
from mumu.runtime.http import serve
from mumu.settings import Settings


class AiohttpSender:
    """Frames of one socket, written by aiohttp's websocket writer from a writer task."""

    def __init__(self, ws: web.WebSocketResponse, limit: int) -> None:
        self._ws = ws
        self.limit = limit
        self._queued: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.stopped = False

    def send(self, payload: bytes) -> bool:
        if self.stopped:
            return True
        if len(self._queued) >= self.limit:
            return False
        self._queued.append(payload)
        if len(self._queued) >= self.limit:
            self._room.clear()
        self._ready.set()
        return True

    async def put(self, payload: bytes) -> None:
        while not self.send(payload):
            await self._room.wait()

    def stop(self) -> None:
        self.stopped = True
        self._queued.clear()
        self._room.set()
        self._ready.set()

    async def run(self) -> None:
        while not self.stopped:
            if self._queued:
                payload = self._queued.popleft()
                self._room.set()
                try:
                    await self._ws.send_frame(payload, WSMsgType.TEXT)
                except ConnectionError:
                    self.stop()
            else:
                self._ready.clear()
                await self._ready.wait()


def aiohttp_sender(ws: web.WebSocketResponse, _: asyncio.BaseTransport, limit: int) -> Sender:
    return AiohttpSender(ws, limit)


async def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    app[SENDER] = aiohttp_sender
    runner, port = await serve(app, settings.gateway.host, settings.gateway.port)
    print(f"gateway (aiohttp writer): http://{settings.gateway.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
