"""The one bridge from blocking work in a worker thread to the event loop.

Model inference produces its output piece by piece (Whisper segments, LLM tokens) in a
thread; the stage wants each piece on the event loop as soon as it exists. ``ThreadStream``
runs ``work(emit, stop)`` in an executor, yields what it emits in order, and returns its
result; leaving the block early sets ``stop`` (the work checks it between pieces), takes
work that has not started off the executor's queue, and waits for running work to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Work = Callable[[Callable[[T], None], threading.Event], R]
"""Blocking: calls ``emit(item)`` for each piece; returns early once ``stop`` is set."""


class _End:
    """Marks the end of the work's output."""


class ThreadStream(Generic[T, R]):
    """``async with ThreadStream(pool, work) as s: async for item in s: ...; await s.result()``."""

    def __init__(
        self, executor: Executor, work: Work[T, R], *, stop: threading.Event | None = None
    ) -> None:
        self._executor = executor
        self._work = work
        self.stop = stop or threading.Event()
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self._job: Future[R] | None = None
        self._future: asyncio.Future[R] | None = None

    async def __aenter__(self) -> ThreadStream[T, R]:
        loop = asyncio.get_running_loop()

        def emit(item: T | _End) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)

        def run() -> R:
            try:
                return self._work(emit, self.stop)
            finally:
                emit(_End())

        self._job = self._executor.submit(run)
        self._future = asyncio.wrap_future(self._job, loop=loop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        if self._job is None or self._future is None or self._job.cancel():
            return  # never started: taken off the executor's queue
        with contextlib.suppress(Exception):  # its error, if any, was raised already
            await asyncio.shield(self._future)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        while not isinstance(item := await self._queue.get(), _End):
            yield item

    async def result(self) -> R:
        """The work's return value (or its exception), once it has finished."""
        if self._future is None:
            raise RuntimeError("ThreadStream used outside `async with`")
        return await self._future
