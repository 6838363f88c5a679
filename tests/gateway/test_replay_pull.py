"""``feed.replay`` on a real JetStream: it reads at its caller's pace, one bounded batch
ahead, and goes on where it was when JetStream removed its idle consumer."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.gateway import feed, pull
from mumu.gateway.feed import replay, result_filters
from tests.gateway.conftest import WS_A, WS_B, Results, rid


async def replay_consumers(nc: NATS) -> list[int]:
    """What each replay consumer of WS_A has delivered."""
    infos = await nc.jetstream().consumers_info(subjects.STREAM_RESULTS)
    mine = set(result_filters(WS_A))
    return [i.delivered.consumer_seq or 0 for i in infos
            if set(i.config.filter_subjects or ()) == mine]


async def history(results: Results, count: int, size: int) -> list[int]:
    r, text = rid(), "p" * size
    return list(await asyncio.gather(*(
        results.delta(WS_A, "s", r, n, f"{n},{text}") for n in range(count))))


async def test_a_slow_caller_has_at_most_one_batch_read_ahead(
    nc: NATS, streams: None, results: Results
) -> None:
    cursors = await history(results, 400, 4_000)  # 1.6 MB
    await results.delta(WS_B, "s", rid(), 0, "another workspace's")
    reading = replay(nc, WS_A, 0)
    first = await anext(reading)
    await asyncio.sleep(1.0)  # a push consumer would have sent all 400 by now
    delivered = await replay_consumers(nc)
    got = [first[0]] + [seq async for seq, _ in reading]
    assert got == cursors
    assert len(delivered) == 1
    assert delivered[0] * 4_000 <= pull.MAX_BYTES + 4_100, delivered  # one batch, no more
    assert await replay_consumers(nc) == []  # removed at the end


async def test_an_event_larger_than_a_batch_is_fetched_on_its_own(
    nc: NATS, streams: None, results: Results
) -> None:
    r = rid()
    small = await results.delta(WS_A, "s", r, 0, "small")
    large = await results.delta(WS_A, "s", r, 1, "L" * (pull.MAX_BYTES * 2))
    after = await results.delta(WS_A, "s", r, 2, "small again")
    got = [(seq, len(msg.data)) async for seq, msg in replay(nc, WS_A, 0)]
    assert [seq for seq, _ in got] == [small, large, after]
    assert got[1][1] > pull.MAX_BYTES * 2


async def test_a_replay_whose_idle_consumer_was_removed_goes_on_where_it_was(
    nc: NATS, streams: None, results: Results, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "REPLAY_INACTIVE", 1.0)
    cursors = await history(results, 300, 2_000)
    reading = replay(nc, WS_A, 0)
    got = [(await anext(reading))[0] for _ in range(10)]
    async with asyncio.timeout(20):  # the caller stalls: JetStream removes the consumer
        while await replay_consumers(nc):
            await asyncio.sleep(0.5)
    got += [seq async for seq, _ in reading]
    assert got == cursors  # nothing lost, nothing twice
