"""Live decodes of several streams gathered into one model call.

Each live stream has at most one decode in flight (its steps are sequential), so a replica
serving N streams has up to N decodes waiting at any moment. ``LiveBatcher`` takes them
from the streams' ``LiveDecoder``s: the first one waits ``window`` seconds for others (at
most ``max_batch``), then all go to the transcriber's ``transcribe_windows`` together: one
encoder pass, one ``generate`` and one ``align`` for the batch (``window_batch.py``). While
``workers`` batches are in the model, new decodes queue and the next batch takes them at
once, so under load the batches fill without waiting for the window.

On by default where it pays (``batching``: the model on CUDA); on CPU a batch of N costs
about N decodes, so it is off there unless asked for (docs/audio.md, "Live decodes on a
GPU").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from mumu.stages.transcribe.engine import Batched, Job, OnSegment, Result

log = logging.getLogger(__name__)


class Windows(Protocol):
    async def transcribe_windows(self, jobs: list[Job]) -> Batched: ...


def batching(setting: Literal["auto", "on", "off"], device: str) -> bool:
    """Whether live decodes are batched: ``auto`` is on when the model runs on CUDA."""
    return setting == "on" or (setting == "auto" and device == "cuda")


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Result]


class LiveBatcher:
    """``transcribe`` for ``LiveDecoder``: a decode waits for its batch's result."""

    def __init__(self, transcriber: Windows, window_ms: float, max_batch: int, *,
                 workers: int = 1, on_batch: Callable[[int], None] | None = None) -> None:
        self.transcriber = transcriber
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self._on_batch = on_batch
        """Hears the number of decodes of each model call."""
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(workers)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Gather and dispatch (an owned task) until ``stop``."""
        self._task = asyncio.create_task(self.run(), name="mumu-live-batch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        if self._task is None or self._task.done():
            raise RuntimeError("live batcher used before start() or after stop()")
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

    async def run(self) -> None:
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
                results, sizes = await self.transcriber.transcribe_windows(
                    [p.job for p in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                results, sizes = [exc] * len(batch), []
            except asyncio.CancelledError:
                for pending in batch:  # nobody may wait forever on a stopped batcher
                    pending.job.cancelled.set()
                    pending.future.cancel()
                raise
            for size in sizes:
                if self._on_batch is not None:
                    self._on_batch(size)
            log.debug("live batch of %d decodes in %d model calls", len(batch), len(sizes),
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
