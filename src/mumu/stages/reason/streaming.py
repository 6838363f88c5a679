"""One answer: read the backend, publish coalesced deltas, stop on cancel.

The backend is read in one task and deltas are published from another, so a slow
PubAck never slows reading the model. The first delta goes out as soon as the
first token arrives; after that text is coalesced for ``interval`` seconds or
``max_chunks`` chunks. Every delta of a retried attempt has the attempt in its
id (its ``Nats-Msg-Id``), so it is not dropped as a duplicate of the failed
attempt's; the stage marks the first one ``restart`` when an earlier attempt may
have published deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from mumu.runtime.messages import Emit, Outbound
from mumu.stages.reason.backend import Backend, ChatRequest

MakeDelta = Callable[[int, str], Outbound]
"""(index, text) -> the delta to publish."""


class DeltaStream:
    """Buffers text chunks and publishes them as deltas from its own task (``run``)."""

    def __init__(self, emit: Emit, make: MakeDelta, *, interval: float, max_chunks: int) -> None:
        self._emit = emit
        self._make = make
        self._interval = interval
        self._max_chunks = max_chunks
        self._buffer: list[str] = []
        self._closed = False
        self._wake = asyncio.Event()
        self._last = 0.0
        self.index = 0
        self.published = ""
        self.started = False
        """A delta was handed to NATS (maybe not yet acknowledged)."""

    def add(self, text: str) -> None:
        self._buffer.append(text)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def abort(self) -> None:
        """Publish nothing more: what is buffered is dropped and ``run`` returns at its
        next step, even when the cancel of its task was lost (on Python 3.11,
        ``asyncio.wait_for`` inside nats-py's publish drops a cancel that lands as the
        PubAck arrives: the task then waited for text that never came)."""
        self._buffer.clear()
        self.close()

    async def run(self) -> None:
        while True:
            if not self._buffer:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.index > 0:
                await self._coalesce()
            await self._flush()

    async def _coalesce(self) -> None:
        deadline = self._last + self._interval
        while not self._closed and len(self._buffer) < self._max_chunks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the wait ends, and the publisher would then wait forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        self.started = True
        await self._emit(self._make(self.index, text))
        self.index += 1
        self.published += text
        self._last = time.monotonic()


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    time_to_first_token: float | None
    model_seconds: float
    cancelled: bool


async def generate(
    backend: Backend,
    request: ChatRequest,
    deltas: DeltaStream,
    cancelled: asyncio.Event,
    started: float,
) -> Answer:
    """Stream ``request`` into ``deltas`` until the model ends or ``cancelled`` is set.

    A backend error ends the attempt at once (the deltas still buffered are dropped:
    the retry starts over with a ``restart`` delta) and propagates to the caller.
    """
    if cancelled.is_set():  # cancelled before it started: no model call at all
        deltas.close()
        return Answer(text="", time_to_first_token=None, model_seconds=0.0, cancelled=True)
    first: list[float] = []
    publisher = asyncio.create_task(deltas.run(), name="reason-deltas")

    async def read() -> None:
        stream = backend.stream(request)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if not first:
                    first.append(time.perf_counter())
                if publisher.done():
                    publisher.result()  # a failed publish ends the answer
                deltas.add(chunk)

    t0 = time.perf_counter()
    reader = asyncio.create_task(read(), name="reason-backend")
    waiter = asyncio.create_task(cancelled.wait(), name="reason-cancel")
    try:
        await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        was_cancelled = not reader.done()
        if was_cancelled:
            reader.cancel()
            await asyncio.wait({reader})
        if not reader.cancelled():
            reader.result()  # raises the backend's error
    except BaseException:
        deltas.abort()
        for task in (publisher, reader):
            task.cancel()
        await asyncio.gather(publisher, reader, return_exceptions=True)
        raise
    finally:
        model_seconds = time.perf_counter() - t0
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        deltas.close()
    await publisher
    return Answer(
        text=deltas.published,
        time_to_first_token=(first[0] - started) if first else None,
        model_seconds=model_seconds,
        cancelled=was_cancelled,
    )
