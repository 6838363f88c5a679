"""Whole recordings that arrive within a short window, decoded as one micro-batch
(the gathering loop is ``gather.Gatherer``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mumu.stages.transcribe.batch_decode import run_batch
from mumu.stages.transcribe.engine import Batched, Engine, Job, OnSegment, Result
from mumu.stages.transcribe.gather import Gatherer


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
        self.batch_size = batch_size
        self.concurrency = concurrency or max_batch * engine.settings.num_workers
        self._gatherer = Gatherer(self._decode, window_ms, max_batch,
                                  workers=engine.settings.num_workers, name="mumu-microbatch",
                                  on_batch=on_batch)

    @property
    def languages(self) -> frozenset[str]:
        return self.engine.languages

    @property
    def device(self) -> str:
        return self.engine.device

    async def start(self) -> None:
        """Load the model, then gather and dispatch (an owned task) until ``stop``."""
        await self.engine.start()
        self._gatherer.start()

    async def stop(self) -> None:
        await self._gatherer.stop()
        await self.engine.stop()

    async def transcribe(self, job: Job, on_segment: OnSegment) -> Result:
        if job.options.word_timestamps or job.encoder_margin > 0:
            # word timing and a short encoder window are per request: decoded on their own
            return await self.engine.transcribe(job, on_segment)
        return await self._gatherer.transcribe(job, on_segment)

    async def transcribe_windows(self, jobs: list[Job]) -> Batched:
        """Live windows are batched by the live route's own collector, not here."""
        return await self.engine.transcribe_windows(jobs)

    async def _decode(self, jobs: list[Job]) -> Batched:
        results = await asyncio.get_running_loop().run_in_executor(
            self.engine.executor, run_batch, self.engine.model, jobs, self.batch_size)
        return results, [len(jobs)]
