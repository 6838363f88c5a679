"""The outgoing side of one websocket: written at once while the client keeps up,
queued (bounded, in order) and written in batches while it does not.

A frame for an idle socket is written straight from the dispatch that produced it:
no queue, no task switch. When the transport holds more than ``HIGH_WATER`` unsent
bytes (the client is not reading fast enough), frames queue up and the socket's
writer task waits for the buffer to drain below ``LOW_WATER``, then writes what
queued in one go (one system call for a burst, or for a resume replaying hundreds of
events). A client that falls ``limit`` frames behind is stopped: the queue is
dropped, the socket is closed (1013) and the client resumes from its cursor.

The frames are plain RFC 6455 text frames, FIN set, unmasked as a server's are;
sockets are opened with compression off, so they are byte for byte what aiohttp's own
writer produces for them. aiohttp keeps writing the control frames (ping, pong,
close) on the same transport; a frame is always written whole, so the two never
interleave inside a frame.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Protocol

HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
REPLAY_WATER = 1 << 18
QUEUE_BYTES = 1 << 20
"""Default ``limit_bytes``: bytes queued behind a congested socket."""
DRAIN_POLL = 0.005
DRAIN_POLL_MAX = 0.1
WRITE_BATCH = 256
"""Most frames written at once."""

_OP_TEXT_FIN = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented websocket text frame."""
    n = len(payload)
    if n < 126:
        return bytes((_OP_TEXT_FIN, n)) + payload
    if n < 1 << 16:
        return _LEN16.pack(_OP_TEXT_FIN, 126, n) + payload
    return _LEN64.pack(_OP_TEXT_FIN, 127, n) + payload


class Sender(Protocol):
    """What a socket sends its frames through (``Outbox``; the benchmark also runs
    the gateway with aiohttp's own writer behind this, ``mumu.bench.gateway_writer``)."""

    limit: int
    stopped: bool

    def send(self, payload: bytes) -> bool: ...

    async def put(self, payload: bytes) -> None: ...

    def stop(self) -> None: ...

    async def run(self) -> None: ...


class Outbox:
    """The frames of one socket; ``run`` is its writer task."""

    def __init__(
        self, transport: asyncio.BaseTransport, limit: int, limit_bytes: int = QUEUE_BYTES
    ) -> None:
        if not isinstance(transport, asyncio.WriteTransport):
            raise TypeError("a websocket needs a writable transport")
        self._transport = transport
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._queued: deque[bytes] = deque()
        self._queued_bytes = 0
        self._congested = False
        self._drain_to = LOW_WATER
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        """Nothing queued and not congested: a replay may write."""
        self._idle.set()
        self.stopped = False

    def __len__(self) -> int:
        return len(self._queued)

    def send(self, payload: bytes) -> bool:
        """Write ``payload`` now, or queue it behind what waits; False: the queue is full."""
        if self.stopped:
            return True  # the socket is going away; nothing more is sent
        if not self._queued and not self._congested:
            self._write(text_frame(payload))
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
        """A replayed frame, at the client's pace: waits until nothing is queued and the
        socket is not congested, then writes; above ``REPLAY_WATER`` unsent bytes the
        socket is congested until the client has read it down to a quarter of that."""
        while not self.stopped and (self._queued or self._congested):
            self._idle.clear()
            self._ready.set()
            await self._idle.wait()
        if not self.stopped:
            self._write(text_frame(payload), REPLAY_WATER, REPLAY_WATER // 4)

    def stop(self) -> None:
        """Send nothing more (what is queued is dropped); the writer task ends."""
        self.stopped = True
        self._queued.clear()
        self._queued_bytes = 0
        self._idle.set()
        self._ready.set()

    async def run(self) -> None:
        """The writer task: waits out congestion, then writes what queued meanwhile."""
        while not self.stopped:
            if self._congested:
                await self._drain()
            elif self._queued:
                count = min(WRITE_BATCH, len(self._queued))
                batch = [self._queued.popleft() for _ in range(count)]
                self._queued_bytes -= sum(len(p) for p in batch)
                self._write(b"".join(text_frame(p) for p in batch))
            else:
                self._ready.clear()
                self._idle.set()
                await self._ready.wait()

    def _write(self, frames: bytes, high: int = HIGH_WATER, low: int = LOW_WATER) -> None:
        if self._transport.is_closing():
            self.stop()
            return
        try:
            self._transport.write(frames)
        except RuntimeError:  # the transport was shut for writing underneath us
            self.stop()
            return
        if self._transport.get_write_buffer_size() > high:
            self._congested, self._drain_to = True, low
            self._idle.clear()
            self._ready.set()

    async def _drain(self) -> None:
        # a transport tells only its protocol (aiohttp's, which keeps its drain waiter
        # private) when it drains; we look every 5 ms while the client reads, less and
        # less often (up to DRAIN_POLL_MAX) while it reads nothing
        pause, left = DRAIN_POLL, self._transport.get_write_buffer_size()
        while left > self._drain_to and not self._transport.is_closing():
            await asyncio.sleep(pause)
            now = self._transport.get_write_buffer_size()
            pause = DRAIN_POLL if now < left else min(2 * pause, DRAIN_POLL_MAX)
            left = now
        self._congested = False
