"""The live feed on a real JetStream: past its bounded pending buffer NATS drops, the
feed sees the gap and re-subscribes from its last sequence, losing nothing."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.gateway import feed
from mumu.gateway.feed import LiveFeed
from tests.gateway.conftest import WS_A, Results, rid


async def test_a_live_feed_past_its_pending_limit_re_subscribes_and_loses_nothing(
    nc: NATS, streams: None, results: Results, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(feed, "LIVE_PENDING_MSGS", 100)
    r = rid()
    cursors = [await results.delta(WS_A, "feed", r, 0, "first")]
    cursors += await asyncio.gather(*(results.delta(WS_A, "feed", r, n, f"{n}")
                                      for n in range(1, 300)))

    async def before_them(_: NATS) -> int:
        return cursors[0] - 1

    monkeypatch.setattr(feed, "last_sequence", before_them)
    got: list[int] = []
    done = asyncio.Event()

    async def on_message(sequence: int, _: Msg, __: float) -> None:
        if not got:
            time.sleep(0.3)  # the loop stalls once: the backlog piles up in the subscription
        got.append(sequence)
        if sequence == max(cursors):
            done.set()

    live = LiveFeed(nc, on_message)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="mumu.gateway.feed"):
        await live.start()
        running = asyncio.create_task(live.run(stop))
        try:
            await asyncio.wait_for(done.wait(), 30)
        finally:
            stop.set()
            await running
    assert got == sorted(cursors)  # all of them, in order, once
    assert any("re-subscribing" in m for m in caplog.messages)  # NATS dropped past the limit
