"""The outgoing side of one websocket, written by aiohttp's own websocket writer: at once
while the client keeps up, queued (bounded, in order) and written by the socket's writer
task while it does not.

A frame for a socket whose client keeps up is written from the dispatch that produced
it: no queue, no task switch. That write never waits: it is made only while aiohttp has
not paused writing and the frame fits under the transport's high-water mark
(``HIGH_WATER``), so aiohttp's writer finds nothing to drain. Otherwise frames queue, and
the socket's writer task writes them one by one, waiting in aiohttp's own drain while the
client is behind (above ``HIGH_WATER`` unsent until it read down to ``LOW_WATER``). A
replayed frame is written only once nothing is queued, so a replay goes at the client's
pace. A client that falls ``limit`` frames (or ``limit_bytes``) behind is stopped: the
queue is dropped, the socket is closed (1013) and the client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import WSMsgType, web

HIGH_WATER = 1 << 17
"""Unsent bytes above which aiohttp's writer pauses (the transport's high-water mark).
aiohttp looks at the pause once per 256 KiB it wrote, so a socket holds at most this plus
256 KiB plus a frame."""
LOW_WATER = 1 << 15
"""... and resumes, once the client read the socket down to this."""
QUEUE_BYTES = 1 << 20
"""Default ``limit_bytes``: bytes queued behind a congested socket."""


class Outbox:
    """The frames of one socket; ``run`` is its writer task."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.BaseRequest, limit: int,
        limit_bytes: int = QUEUE_BYTES,
    ) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client went away")
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self._ws = ws
        self._transport = transport
        self._protocol = request.protocol
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._queued: deque[bytes] = deque()
        self._queued_bytes = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        """Nothing queued: a replay may write."""
        self._idle.set()
        self.stopped = False

    def __len__(self) -> int:
        return len(self._queued)

    async def send(self, payload: bytes) -> bool:
        """Write ``payload`` now, or queue it behind what waits; False: the queue is full.
        Never waits for the client."""
        if self.stopped:
            return True  # the socket is going away; nothing more is sent
        if not self._queued and self._fits(len(payload)):
            await self._write(payload)  # returns without yielding: nothing to drain
            return True
        return self.queue(payload)

    def queue(self, payload: bytes) -> bool:
        """Queue ``payload`` for the writer task (behind what waits); False: full."""
        if self.stopped:
            return True
        if len(self._queued) >= self.limit or (
                self._queued and self._queued_bytes + len(payload) > self.limit_bytes):
            return False
        self._queued.append(payload)
        self._queued_bytes += len(payload)
        self._idle.clear()
        self._ready.set()
        return True

    async def put(self, payload: bytes) -> None:
        """A replayed frame, at the client's pace: written once nothing is queued, then
        waits (in aiohttp's drain) while the client is behind."""
        while self._queued and not self.stopped:
            await self._idle.wait()
        if not self.stopped:
            await self._write(payload)

    async def last(self, payload: bytes) -> None:
        """After ``stop``: a last frame (the error a close follows), written only if the
        client is not behind; never waits."""
        if self._fits(len(payload)):
            await self._write(payload)

    def stop(self) -> None:
        """Send nothing more (what is queued is dropped); the writer task ends."""
        self.stopped = True
        self._queued.clear()
        self._queued_bytes = 0
        self._idle.set()
        self._ready.set()

    async def run(self) -> None:
        """The writer task: writes what queued, waiting while the client is behind."""
        while not self.stopped:
            if self._queued:
                payload = self._queued.popleft()
                self._queued_bytes -= len(payload)
                await self._write(payload)
            else:
                self._ready.clear()
                self._idle.set()
                await self._ready.wait()

    def _fits(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes can be written without waiting for the client
        (aiohttp waits in its drain once writing is paused; the frame header is at most
        10 bytes)."""
        return (not self._protocol.writing_paused
                and self._transport.get_write_buffer_size() + size + 10 <= HIGH_WATER)

    async def _write(self, payload: bytes) -> None:
        try:
            await self._ws.send_frame(payload, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):  # closing, or closed underneath us
            self.stop()
