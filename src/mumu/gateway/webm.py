"""WebM (Opus, a browser's ``MediaRecorder``) decoded as it arrives, to 16 kHz PCM16 mono.

The demuxer and decoder (PyAV) run in a thread of their own for the stream's life, reading
from a pipe the event loop writes the client's frames into; the PCM comes back through
``runtime.threads.ThreadStream``. The pipe holds at most ``MAX_PENDING`` bytes not yet read:
``feed`` waits while it is full, so a decoder that falls behind slows the client down
instead of growing the gateway's memory.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import av
import av.error

from mumu.runtime.threads import ThreadStream

SAMPLE_RATE = 16_000
MAX_PENDING = 256 * 1024
"""Bytes of webm the pipe holds before ``feed`` waits (a few seconds of Opus)."""


class UndecodableAudioError(ValueError):
    """The bytes are not WebM with an audio track PyAV decodes."""


class _Pipe(io.RawIOBase):
    """Bytes from the event loop to the decoder thread; ``read`` blocks until some come
    (or the input is closed: then end of file)."""

    def __init__(self, on_room: Callable[[], None]) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._closed_input = False
        self._on_room = on_room
        self.pending = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def put(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self.pending += len(data)
            self._cond.notify()

    def close_input(self) -> None:
        with self._cond:
            self._closed_input = True
            self._cond.notify()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with self._cond:
            while not self._chunks and not self._closed_input:
                self._cond.wait()
            if not self._chunks:
                return 0
            head = self._chunks.popleft()
            n = min(len(buffer), len(head))
            buffer[:n] = head[:n]
            if n < len(head):
                self._chunks.appendleft(head[n:])
            self.pending -= n
        self._on_room()
        return n


class WebmDecoder:
    """``async with WebmDecoder() as d``: ``feed`` bytes, iterate ``pcm()`` in another task,
    ``close_input`` at the end (then ``pcm()`` ends after the last samples)."""

    def __init__(self) -> None:
        self._room = asyncio.Event()
        self._room.set()
        loop = asyncio.get_running_loop()
        def on_room() -> None:
            loop.call_soon_threadsafe(self._check_room)

        self._pipe = _Pipe(on_room)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mumu-webm")
        self._stream: ThreadStream[bytes, None] = ThreadStream(self._executor, self._work)

    def _check_room(self) -> None:
        if self._pipe.pending < MAX_PENDING:
            self._room.set()

    async def __aenter__(self) -> WebmDecoder:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pipe.close_input()
        await self._stream.__aexit__(None, None, None)
        self._executor.shutdown(wait=False)

    async def feed(self, data: bytes) -> None:
        await self._room.wait()
        self._pipe.put(data)
        if self._pipe.pending >= MAX_PENDING:
            self._room.clear()
            self._check_room()  # the thread may have read it all meanwhile

    def close_input(self) -> None:
        """No more input: the decoder ends after what it has; ``feed`` no longer waits."""
        self._pipe.close_input()
        self._room.set()

    async def pcm(self) -> AsyncIterator[bytes]:
        """PCM16 16 kHz mono, as decoded; raises ``UndecodableAudioError`` at the end when
        the input was not decodable webm."""
        async for chunk in self._stream:
            yield chunk
        await self._stream.result()

    def _work(self, emit: Callable[[bytes], None], stop: threading.Event) -> None:
        try:
            container = av.open(self._pipe, "r", format="webm", buffer_size=4096,
                                options={"probesize": "4096", "analyzeduration": "0"})
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise UndecodableAudioError(f"not WebM audio: {exc}") from exc
        try:
            if not container.streams.audio:
                raise UndecodableAudioError("the WebM has no audio track")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for packet in container.demux(audio=0):
                if stop.is_set():
                    return
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        emit(out.to_ndarray().tobytes())
            for out in resampler.resample(None):
                emit(out.to_ndarray().tobytes())
        except av.error.FFmpegError as exc:
            raise UndecodableAudioError(f"the WebM does not decode: {exc}") from exc
        finally:
            container.close()
