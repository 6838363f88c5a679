"""The live batcher's collecting rules, fast, with an in-memory model call (the real model's
batches are in ``test_live_batch.py``): decodes waiting together go in one call, at most
``max_batch``; a failed call fails its own decodes only; a cancelled decode leaves the
others their results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from mumu.contracts.options import AudioOptions
from mumu.stages.transcribe.engine import Batched, Job, Result
from mumu.stages.transcribe.live.batcher import LiveBatcher


class Model:
    """``transcribe_windows`` that answers each job with its own audio length as text,
    after ``gate`` opens (so the test decides when a call finishes)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        self.fail_next = False

    async def transcribe_windows(self, jobs: list[Job]) -> Batched:
        self.calls.append(len(jobs))
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model failed")
        results: list[Result | BaseException] = [
            Result(segments=[], language=str(j.audio.size), language_probability=1.0,
                   duration=0.0, compute_seconds=0.0) for j in jobs]
        return results, [len(jobs)]


def job(n: int) -> Job:
    return Job(audio=np.zeros(n, dtype=np.float32), options=AudioOptions(language="en"),
               encoder_margin=2.0)


async def nothing(*_: object) -> None:
    return None


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_decodes_waiting_together_go_in_one_call_of_at_most_max_batch() -> None:
    model = Model()
    sizes: list[int] = []
    batcher = LiveBatcher(model, window_ms=50, max_batch=4, on_batch=sizes.append)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.transcribe(job(1), nothing))
        await until(lambda: model.calls == [1])  # alone past its window
        # nine decodes queue while the model is busy: the next calls take them at once
        rest = [asyncio.create_task(batcher.transcribe(job(n), nothing)) for n in range(2, 11)]
        await asyncio.sleep(0)  # (each task queues its decode on its first step)
        model.gate.set()
        results = await asyncio.gather(first, *rest)
    finally:
        await batcher.stop()
    assert model.calls == [1, 4, 4, 1]
    assert sizes == model.calls
    assert [r.language for r in results] == [str(n) for n in range(1, 11)]


async def test_a_failed_call_fails_its_own_decodes_and_the_next_call_still_runs() -> None:
    model = Model()
    batcher = LiveBatcher(model, window_ms=20, max_batch=8)
    batcher.start()
    try:
        model.fail_next = True
        model.gate.set()
        failed = await asyncio.gather(*(batcher.transcribe(job(n), nothing) for n in (1, 2)),
                                      return_exceptions=True)
        ok = await batcher.transcribe(job(3), nothing)
    finally:
        await batcher.stop()
    assert [str(f) for f in failed] == ["the model failed"] * 2
    assert ok.language == "3"
    assert model.calls == [2, 1]


async def test_a_cancelled_decode_leaves_the_others_of_its_batch_their_results() -> None:
    model = Model()
    batcher = LiveBatcher(model, window_ms=20, max_batch=8)
    batcher.start()
    try:
        tasks = [asyncio.create_task(batcher.transcribe(job(n), nothing)) for n in (1, 2, 3)]
        await until(lambda: model.calls == [3])
        tasks[1].cancel()
        model.gate.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await batcher.stop()
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.language for d in (done[0], done[2]) if isinstance(d, Result)] == ["1", "3"]


async def test_a_batcher_not_started_refuses_decodes() -> None:
    batcher = LiveBatcher(Model(), window_ms=5, max_batch=8)
    with pytest.raises(RuntimeError, match="before start"):
        await batcher.transcribe(job(1), nothing)
