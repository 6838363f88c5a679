"""The runtime owns every retry: ``retry`` in place, ``hold`` on the last delivery, and both
show in its metrics (``mumu_stage_messages_total{outcome}``, ``mumu_stage_held_messages``)
and logs. A real nats-server; the pass-through test stage scripts the failures."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.aio.client import Client as NATS

from mumu.runtime import Disposition, RetryPolicy
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from tests.harness import Collector, running
from tests.passthrough import PassThrough
from tests.runtime.test_ack_mapping import ping, publish

ROUTE = "mumu_bench"


def outcomes(metrics: StageMetrics) -> dict[str, float | None]:
    return {o.value: metrics.registry.get_sample_value("mumu_stage_messages_total", {
        "stage": "passthrough", "route": ROUTE, "outcome": o.value}) for o in Disposition}


def held(metrics: StageMetrics) -> float | None:
    return metrics.registry.get_sample_value("mumu_stage_held_messages", {
        "stage": "passthrough", "route": ROUTE, "reason": "test_dep"})


@pytest.mark.parametrize("batched", [False, True], ids=["handler", "batch_handler"])
async def test_an_outage_on_the_last_delivery_is_held_never_dead_lettered_and_counted(
    nc: NATS, streams: None, settings: Settings, caplog: pytest.LogCaptureFixture,
    batched: bool,
) -> None:
    caplog.set_level(logging.INFO)
    stage = PassThrough(batched=batched, retry=RetryPolicy(first_delay=0.05, max_delay=0.2))
    stage.down = True
    metrics = StageMetrics("passthrough")
    p = ping("unavailable")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        await publish(nc, p)
        async with asyncio.timeout(10):  # nak'ed twice (0.2 s, 0.4 s), then held
            while held(metrics) != 1:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # held: re-run, heart-beaten, never dead-lettered
        assert not seen.on("mumu.dlq.") and not seen.on("mumu.error.")
        assert not seen.on("mumu.bench.hop2.")
        calls_while_held = len(stage.calls)
        stage.down = False  # the dependency is back: the held message goes through
        await seen.wait_count("mumu.bench.hop2.", 1)
        await asyncio.sleep(0.3)
    deliveries = [d for _, d in stage.calls]
    assert deliveries[:3] == [1, 2, 3] and set(deliveries[3:]) == {3}
    assert calls_while_held >= 5  # re-run while held (0.05, 0.1, 0.2, 0.2... s apart)
    assert held(metrics) == 0
    assert outcomes(metrics) == {"ack": 1, "nak": 2, "term": 0, "retry": 0, "hold": 1}
    logged = [r.getMessage() for r in caplog.records if r.name == "mumu.stage"]
    assert sum("holding on its last delivery" in m for m in logged) == 1
    assert any("still held" in m for m in logged)
    assert not seen.on("mumu.dlq.")


async def test_transient_errors_are_retried_in_place_when_the_route_allows(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough(retry=RetryPolicy(in_place=2, first_delay=0.05))
    metrics = StageMetrics("passthrough")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        await publish(nc, ping("busy_twice"))
        await seen.wait_count("mumu.bench.hop2.", 1)
        await asyncio.sleep(0.3)
    assert [d for _, d in stage.calls] == [1, 1, 1]  # one delivery, three attempts
    assert stage.called_at[1] - stage.called_at[0] >= 0.05  # the error's delay
    assert outcomes(metrics) == {"ack": 1, "nak": 0, "term": 0, "retry": 2, "hold": 0}


async def test_without_a_retry_policy_transient_errors_go_back_to_the_server(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough()
    metrics = StageMetrics("passthrough")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        await publish(nc, ping("busy_twice"))
        await seen.wait_count("mumu.bench.hop2.", 1, timeout=15)
    assert [d for _, d in stage.calls] == [1, 2, 3]
    assert outcomes(metrics) == {"ack": 1, "nak": 2, "term": 0, "retry": 0, "hold": 0}


async def test_an_attempt_that_published_something_is_never_retried_in_place(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough(retry=RetryPolicy(in_place=3, first_delay=0.05))
    metrics = StageMetrics("passthrough")
    async with running(stage, settings, metrics=metrics), Collector(nc) as seen:
        await publish(nc, ping("emit_then_fail"))
        await seen.wait_for(lambda _: len(stage.calls) == 2, timeout=10)
        await asyncio.sleep(0.3)
    assert [d for _, d in stage.calls] == [1, 2]  # redelivered, not re-run in place
    assert outcomes(metrics) == {"ack": 1, "nak": 1, "term": 0, "retry": 0, "hold": 0}
    assert not seen.on("mumu.dlq.")
