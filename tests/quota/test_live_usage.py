"""The usage store's parts for live streams, on a real nats-server (KV ``mumu-quota``),
with the clock given: an utterance after a stream's first takes an ask token but no slot,
once per request id; a running stream's slot is renewed so it outlives the in-flight
timeout, and a stream that ended is not brought back."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.quota.errors import QuotaExceededError
from mumu.quota.limits import Limits
from mumu.quota.settings import QuotaSettings
from mumu.quota.usage import UsageStore

LIMITS = Limits.defaults(QuotaSettings(asks_per_minute=3, concurrent_requests=1))


@pytest.fixture
async def usage(nc: NATS, streams: None) -> UsageStore:
    return UsageStore(await nc.jetstream().key_value(subjects.BUCKET_QUOTA),
                      inflight_timeout=100.0)


async def test_utterances_take_asks_but_no_slot_and_each_only_once(usage: UsageStore) -> None:
    assert await usage.admit("ws", "s", LIMITS, now=0.0)  # the stream: token 1, the slot
    assert await usage.take_ask("ws", "s-1", LIMITS, now=1.0)  # token 2, no slot
    assert not await usage.take_ask("ws", "s-1", LIMITS, now=1.5)  # a redelivery: free
    assert not await usage.take_ask("ws", "s", LIMITS, now=1.5)  # in flight: paid already
    assert list((await usage.flow("ws")).inflight) == ["s"]
    assert await usage.take_ask("ws", "s-2", LIMITS, now=2.0)  # token 3
    with pytest.raises(QuotaExceededError) as refused:
        await usage.take_ask("ws", "s-3", LIMITS, now=3.0)
    assert refused.value.limit == "asks_per_minute"
    assert refused.value.retry_after == 17  # one token every 20 s, refilling since 0 s
    assert await usage.take_ask("ws", "s-3", LIMITS, now=23.0)
    # the utterances' record survives the stream's admission and release
    assert await usage.release("ws", "s", now=24.0)
    assert not await usage.take_ask("ws", "s-2", LIMITS, now=90.0)


async def test_a_running_streams_slot_is_renewed_and_an_ended_one_is_not_revived(
    usage: UsageStore,
) -> None:
    await usage.admit("ws", "s", LIMITS, now=0.0)
    assert await usage.hold("ws", "s", now=90.0)
    # without the renewal it would have expired at 100 s and freed the workspace's one slot
    with pytest.raises(QuotaExceededError) as refused:
        await usage.admit("ws", "t", LIMITS, now=150.0)
    assert refused.value.limit == "concurrent_requests"
    assert await usage.release("ws", "s", now=151.0)
    assert not await usage.hold("ws", "s", now=152.0)  # ended: the slot stays free
    assert await usage.admit("ws", "t", LIMITS, now=153.0)
