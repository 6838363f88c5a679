"""``ThreadStream``: the one bridge from blocking work in a thread to the event loop (the
Whisper engine and the llama.cpp backend use it)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from mumu.runtime.threads import ThreadStream


def count(n: int, pause: float = 0.0) -> Callable[[Callable[[int], None], threading.Event], int]:
    def work(emit: Callable[[int], None], stop: threading.Event) -> int:
        sent = 0
        for i in range(n):
            if stop.is_set():
                break
            emit(i)
            sent += 1
            time.sleep(pause)
        return sent

    return work


async def test_items_arrive_in_order_while_the_work_runs_then_its_result() -> None:
    with ThreadPoolExecutor(1) as pool:
        seen: list[tuple[int, bool]] = []
        async with ThreadStream(pool, count(5, pause=0.02)) as items:
            async for i in items:
                seen.append((i, threading.current_thread() is threading.main_thread()))
            assert await items.result() == 5
    assert seen == [(i, True) for i in range(5)]  # on the loop's thread, as they came


async def test_leaving_early_stops_the_work_and_waits_for_it() -> None:
    with ThreadPoolExecutor(1) as pool:
        stream = ThreadStream(pool, count(1_000, pause=0.01))
        async with stream as items:
            async for i in items:
                if i == 2:
                    break
        assert stream.stop.is_set()
        # left the block: the worker has stopped (it was waited for), well before 1,000
        assert 3 <= await stream.result() < 20


async def test_the_works_error_is_raised_from_result() -> None:
    def fail(emit: Callable[[int], None], stop: threading.Event) -> int:
        emit(1)
        raise ValueError("model broke")

    with ThreadPoolExecutor(1) as pool:
        async with ThreadStream(pool, fail) as items:
            assert [i async for i in items] == [1]
            with pytest.raises(ValueError, match="model broke"):
                await items.result()


async def test_work_still_queued_is_taken_off_the_executor_when_abandoned() -> None:
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(lambda: (started.set(), time.sleep(0.3)))
        await asyncio.to_thread(started.wait)
        queued = ThreadStream(pool, count(3))
        async with queued:
            pass  # abandoned before the only worker was free
        busy.result()
        with pytest.raises(asyncio.CancelledError):
            await queued.result()
