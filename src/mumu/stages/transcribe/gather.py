"""Requests that arrive within a short window, gathered into one model call.

The one gathering loop behind both batchers: the file batcher (``batcher.MicroBatcher``,
whole recordings) and the live one (``live.batcher.LiveBatcher``, live decode steps). The
first request waits ``window`` seconds for others (at most ``max_batch``); what queued
while the model was busy is taken at once. At most ``workers`` batches are in the model at
a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mumu.stages.transcribe.engine import Batched, Job, OnSegment, Result

log = logging.getLogger(__name__)

Decode = Callable[[list[Job]], Awaitable[Batched]]
"""One batch's jobs to one result (or that job's error) each, in order, and the sizes of
the model calls that took them."""


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Result]


class Gatherer:
    """``transcribe`` queues a job and waits for its batch; ``start`` runs the loop."""

    def __init__(self, decode: Decode, window_ms: float, max_batch: int, *, workers: int,
                 name: str, on_batch: Callable[[int], None] | None = None) -> None:
        self._decode = decode
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self._name = name
        self._on_batch = on_batch
        """Hears the number of jobs of each model call."""
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(workers)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Gather and dispatch (an owned task) until ``stop``."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self._name} used before start() or after stop()")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(job, future))
        try:
            result = await future
        except asyncio.CancelledError:
            job.cancelled.set()  # its batch may be running: the others still get theirs
            raise
        for segment in result.segments:
            await on_segment(segment, result.language)
        return result

    async def _run(self) -> None:
        """Gather and dispatch until cancelled; every batch task is owned and awaited."""
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    await self._slots.acquire()
                    batch = await self._gather()
                    tg.create_task(self._run_batch(batch))
        finally:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.cancel()

    async def _gather(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # queued while the model was busy: no wait
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.job.cancelled.is_set()]

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            if not batch:
                return
            try:
                results, sizes = await self._decode([p.job for p in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                results, sizes = [exc] * len(batch), []
            except asyncio.CancelledError:
                for pending in batch:  # nobody may wait forever on a stopped batcher
                    pending.job.cancelled.set()
                    if not pending.future.done():
                        pending.future.cancel()
                raise
            for size in sizes:
                if self._on_batch is not None:
                    self._on_batch(size)
            log.debug("%s: %d jobs in %d model calls", self._name, len(batch), len(sizes),
                      extra={"stage": "transcribe"})
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        finally:
            self._slots.release()
