"""Gathering requests that arrive within a short window into one micro-batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mumu.stages.transcribe.batch_decode import run_batch
from mumu.stages.transcribe.engine import Batched, Engine, Job, OnSegment, Result

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Result]


class MicroBatcher:
    """Runs gathered requests through ``run_batch``, at most ``num_workers`` batches at once.

    Segments of a batched request reach ``on_segment`` when its batch is done (one
    forward pass decodes every chunk), not one by one.
    """

    def __init__(
        self, engine: Engine, window_ms: float, max_batch: int, batch_size: int, *,
        concurrency: int | None = None, on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.window = window_ms / 1000
        self.max_batch = max_batch
        self.batch_size = batch_size
        self.concurrency = concurrency or max_batch * engine.settings.num_workers
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._slots = asyncio.Semaphore(engine.settings.num_workers)
        self._task: asyncio.Task[None] | None = None

    @property
    def languages(self) -> frozenset[str]:
        return self.engine.languages

    @property
    def device(self) -> str:
        return self.engine.device

    async def start(self) -> None:
        """Load the model, then gather and dispatch (an owned task) until ``stop``."""
        await self.engine.start()
        self._task = asyncio.create_task(self.run(), name="mumu-microbatch")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.engine.stop()

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        if job.options.word_timestamps or job.encoder_margin > 0:
            # word timing and a short encoder window are per request: decoded on their own
            return await self.engine.transcribe(job, on_segment)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(job, future))
        try:
            result = await future
        except asyncio.CancelledError:
            job.cancelled.set()
            raise
        for segment in result.segments:
            await on_segment(segment, result.language)
        return result

    async def transcribe_windows(self, jobs: list[Job]) -> Batched:
        """Live windows are batched by the live route's own collector, not here."""
        return await self.engine.transcribe_windows(jobs)

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
            if self._on_batch is not None:
                self._on_batch(len(batch))
            log.debug("micro-batch of %d requests", len(batch), extra={"stage": "transcribe"})
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(
                    self.engine.executor, run_batch, self.engine.model,
                    [p.job for p in batch], self.batch_size,
                )
            except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                results = [exc] * len(batch)
            except asyncio.CancelledError:
                for pending in batch:  # nobody may wait forever on a stopped batcher
                    pending.job.cancelled.set()
                    if not pending.future.done():
                        pending.future.cancel()
                raise
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        finally:
            self._slots.release()


async def stop_task(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
