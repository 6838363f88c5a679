"""The usage store on a real nats-server (KV ``mumu-quota``), with the clock given:
token refill, in-flight expiry, idempotent admission and audio charges, and limits
parsing for the CLI."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.quota.errors import QuotaExceededError
from mumu.quota.limits import Limits, parse_limit
from mumu.quota.settings import QuotaSettings
from mumu.quota.usage import UsageStore

LIMITS = Limits.defaults(QuotaSettings(asks_per_minute=2, concurrent_requests=2,
                                       audio_seconds_per_day=10.0))


@pytest.fixture
async def usage(nc: NATS, streams: None) -> UsageStore:
    return UsageStore(await nc.jetstream().key_value(subjects.BUCKET_QUOTA),
                      inflight_timeout=100.0)


async def test_tokens_refill_at_the_per_minute_rate_and_say_when(usage: UsageStore) -> None:
    await usage.admit("ws", "r1", LIMITS, now=1000.0)
    await usage.release("ws", "r1", now=1000.0)
    await usage.admit("ws", "r2", LIMITS, now=1000.0)
    await usage.release("ws", "r2", now=1000.0)
    with pytest.raises(QuotaExceededError) as refused:
        await usage.admit("ws", "r3", LIMITS, now=1001.0)
    assert refused.value.limit == "asks_per_minute"
    assert refused.value.retry_after == 29  # 2 per minute: one token every 30 s
    await usage.admit("ws", "r3", LIMITS, now=1030.0)


async def test_in_flight_is_idempotent_per_request_and_a_lost_end_expires(
    usage: UsageStore,
) -> None:
    limits = Limits.defaults(QuotaSettings(asks_per_minute=100, concurrent_requests=2))
    await usage.admit("ws", "r1", limits, now=0.0)
    await usage.admit("ws", "r1", limits, now=0.0)  # the stage sees what the gateway admitted
    await usage.admit("ws", "r2", limits, now=1.0)
    assert sorted((await usage.flow("ws")).inflight) == ["r1", "r2"]
    with pytest.raises(QuotaExceededError) as refused:
        await usage.admit("ws", "r3", limits, now=2.0)
    assert refused.value.limit == "concurrent_requests"
    assert sorted((await usage.flow("ws")).inflight) == ["r1", "r2"]  # a refusal writes nothing
    # r1's end was never seen: after inflight_timeout it stops counting
    await usage.admit("ws", "r3", limits, now=100.5)
    assert sorted((await usage.flow("ws")).live(100.5, 100.0)) == ["r2", "r3"]
    assert await usage.release("ws", "r2", now=101.0) is True
    assert await usage.release("ws", "r2", now=101.0) is False


async def test_audio_seconds_are_charged_once_per_request_per_utc_day(usage: UsageStore) -> None:
    day = 1_780_000_000.0
    await usage.charge_audio("ws", "r1", 6.0, LIMITS, now=day)
    await usage.charge_audio("ws", "r1", 6.0, LIMITS, now=day)  # a redelivery
    with pytest.raises(QuotaExceededError) as refused:
        await usage.charge_audio("ws", "r2", 6.0, LIMITS, now=day)
    assert refused.value.limit == "audio_seconds_per_day"
    assert (await usage.audio_day("ws", day)).seconds == 6.0
    await usage.charge_audio("ws", "r2", 6.0, LIMITS, now=day + 86_400)  # the next day
    assert (await usage.audio_day("ws", day + 86_400)).longest == 6.0


def test_limits_parse_for_the_cli() -> None:
    assert parse_limit("asks_per_minute", "60") == 60.0
    assert parse_limit("longest_audio", "12.5") == 12.5
    assert parse_limit("longest_audio", "default") is None
    for name, text in (("asks_per_minute", "1.5"), ("asks_per_minute", "-1"),
                       ("longest_audio", "inf"), ("speed", "1"),
                       ("concurrent_requests", "10001")):
        with pytest.raises(ValueError):  # noqa: PT011 - each says why in its message
            parse_limit(name, text)
    limits = Limits.defaults(QuotaSettings()).with_overrides({"longest_audio": 30.0})
    assert limits.overridden == {"longest_audio"}
    assert limits.as_dict()["longest_audio"] == 30.0
    assert limits.as_dict()["asks_per_minute"] == 1200.0
