"""Gathers concurrent handler calls into batches (per key, by size or time window).

Each ``submit`` waits for the batch its item was written in, so a handler returns
(and its message is acked) only after the transaction holding its row committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

Flush = Callable[[str, list[T]], Awaitable[Sequence[BaseException | None]]]
"""Writes one batch of one key; returns one outcome per item (None: written)."""


class BatchWriter(Generic[T]):
    def __init__(
        self, flush: Flush[T], *, max_rows: int, window: float, writers: int
    ) -> None:
        self._flush = flush
        self.max_rows = max_rows
        self.window = window
        self._slots = asyncio.Semaphore(writers)
        self._pending: defaultdict[str, list[tuple[T, asyncio.Future[None]]]] = (
            defaultdict(list)
        )
        self._count = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closed = False
        self._flushing: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, item: T) -> None:
        """Queue ``item``; returns once it is written, raises what its write raised."""
        if self._closed:
            raise RuntimeError("the batch writer is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[key].append((item, future))
        self._count += 1
        if self._count >= self.max_rows:
            self._full.set()
        self._wake.set()
        await future

    async def run(self) -> None:
        """The collecting loop; ends after ``close`` once everything queued is written."""
        try:
            while True:
                await self._wake.wait()
                if not self._closed and self._count < self.max_rows and self.window > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.window)
                batches = self._take()
                for key, items in batches:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._write(key, items))
                    self._flushing.add(task)
                    task.add_done_callback(self._flushing.discard)
                if self._closed and not self._count:
                    break
        finally:
            if self._flushing:
                await asyncio.gather(*self._flushing, return_exceptions=True)

    def _take(self) -> list[tuple[str, list[tuple[T, asyncio.Future[None]]]]]:
        pending, self._pending = self._pending, defaultdict(list)
        self._count = 0
        self._wake.clear()
        self._full.clear()
        batches = []
        for key, items in pending.items():
            live = [(i, f) for i, f in items if not f.done()]
            for start in range(0, len(live), self.max_rows):
                batches.append((key, live[start : start + self.max_rows]))
        return batches

    async def _write(self, key: str, items: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            outcomes: Sequence[BaseException | None] = await self._flush(
                key, [item for item, _ in items]
            )
        except Exception as exc:  # noqa: BLE001 - handed to every waiting handler
            outcomes = [exc] * len(items)
        finally:
            self._slots.release()
        for (_, future), outcome in zip(items, outcomes, strict=True):
            if future.done():
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)

    def close(self) -> None:
        """Stop accepting items; ``run`` writes what is queued and returns."""
        self._closed = True
        self._wake.set()
