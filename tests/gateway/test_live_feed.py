"""The live feed on a real JetStream: on a plain client, past its bounded pending buffer
NATS drops, the feed sees the gap and re-subscribes from its last sequence, losing
nothing; on the gateway's ``DirectClient`` a stalled loop holds the results on the server
instead, and they come in order, once, without a re-subscription."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from nats.aio.client import Client as NATS

from mumu.broker.credentials import AuthDir
from mumu.broker.direct import DirectClient
from mumu.broker.embedded import EmbeddedNats
from mumu.gateway import feed
from mumu.gateway.feed import LiveFeed
from tests.conftest import operator_connection
from tests.gateway.conftest import WS_A, Results, rid


@pytest.mark.parametrize("direct", [False, True], ids=["plain_client", "direct_client"])
async def test_a_stalled_live_feed_loses_and_repeats_nothing(
    direct: bool, nc: NATS, streams: None, results: Results, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, nats_server: EmbeddedNats, broker_users: AuthDir,
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

    async def on_message(sequence: int, _: str, __: bytes, ___: float) -> None:
        if not got:
            time.sleep(0.3)  # the loop stalls once: the backlog piles up in the subscription
        got.append(sequence)
        if sequence == max(cursors):
            done.set()

    client = nc
    if direct:
        client = await operator_connection(nats_server.url, broker_users,
                                           client_class=DirectClient)
    live = LiveFeed(client, on_message)
    stop = asyncio.Event()
    try:
        with caplog.at_level(logging.WARNING, logger="mumu.gateway.feed"):
            await live.start()
            running = asyncio.create_task(live.run(stop))
            try:
                await asyncio.wait_for(done.wait(), 30)
            finally:
                stop.set()
                await running
    finally:
        if direct:
            await client.drain()
    assert got == sorted(cursors)  # all of them, in order, once
    resubscribed = any("re-subscribing" in m for m in caplog.messages)
    # a plain client's subscription dropped past its limit; the direct one read nothing
    # while the loop stalled, so the server held the results
    assert resubscribed is not direct
