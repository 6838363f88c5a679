"""Redelivery timing, settling on a dead connection, oversized dead letters (real server)."""

from __future__ import annotations

import logging

import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts.events import DeadLetterHeaders
from mumu.ops import dlq
from mumu.runtime.consumer import RouteWorker
from mumu.runtime.errors import Disposition
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.settle import Delivery, delivery_of
from mumu.runtime.stage import StageContext
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings
from tests.conftest import operator_connection
from tests.harness import Collector, running
from tests.passthrough import PassThrough
from tests.runtime.test_ack_mapping import WS, ping, publish


def _context(nc: NATS, settings: Settings) -> StageContext:
    return StageContext(
        name="passthrough", settings=settings, nc=nc, js=nc.jetstream(),
        metrics=StageMetrics("passthrough"), tracing=Tracing("passthrough", None),
        log=logging.getLogger("mumu.stage"),
    )


async def test_nak_delays_grow_and_retry_logs_carry_the_request_id(
    nc: NATS, streams: None, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(
        update={"stage": settings.stage.model_copy(update={"backoff": [0.3, 1.2]})}
    )
    stage = PassThrough()
    p = ping("transient")
    with caplog.at_level(logging.WARNING, logger="mumu.stage"):
        async with running(stage, settings), Collector(nc) as seen:
            await publish(nc, p)
            await seen.wait_count("mumu.dlq.", 1, timeout=20)
    assert [d for _, d in stage.calls] == [1, 2, 3]
    first, second = (b - a for a, b in zip(stage.called_at, stage.called_at[1:], strict=False))
    assert 0.3 <= first < 1.0
    assert second >= 1.2 and second > first + 0.5, (first, second)
    logged = [r for r in caplog.records if r.getMessage().startswith(("retrying", "dead-letter"))]
    assert len(logged) == 3
    assert all(getattr(r, "request_id", None) == p.request_id for r in logged)
    assert all(getattr(r, "seq", None) and getattr(r, "subject", None) for r in logged)


async def test_nak_delays_are_kept_to_the_ladder_on_a_long_ack_wait(
    nc: NATS, streams: None, settings: Settings
) -> None:
    """No consumer BackOff: with one, the server held delivery 3 until its ack-wait timer."""
    settings = settings.model_copy(update={"stage": settings.stage.model_copy(
        update={"ack_wait": 10.0, "backoff": [0.2, 0.4, 0.8], "max_deliver": 4})})
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        await publish(nc, ping("transient"))
        await seen.wait_count("mumu.dlq.", 1, timeout=20)
    info = await nc.jetstream().consumer_info(STREAM_BENCH, "passthrough-mumu-bench")
    assert not info.config.backoff
    assert [d for _, d in stage.calls] == [1, 2, 3, 4]
    gaps = [b - a for a, b in zip(stage.called_at, stage.called_at[1:], strict=False)]
    for gap, delay in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert delay <= gap < delay + 3.0, gaps  # far below the 10 s ack wait


async def test_an_ack_on_a_closed_connection_is_logged_not_raised(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
    caplog: pytest.LogCaptureFixture, broker_users: AuthDir,
) -> None:
    ctx = _context(nc, settings)
    worker = RouteWorker(ctx, PassThrough().routes()[0], Publisher(nc, ctx.metrics))
    await worker.ensure_consumer()
    await publish(nc, ping())
    other = await operator_connection(nats_server.url, broker_users)
    psub = await other.jetstream().pull_subscribe_bind(
        durable=worker.durable, stream=STREAM_BENCH)
    (msg,) = await psub.fetch(1, timeout=5)
    await other.close()
    deliveries, sequence = delivery_of(msg)
    d = Delivery(msg, deliveries, sequence, ctx.tracing.start("t", {}))
    with caplog.at_level(logging.WARNING, logger="mumu.stage"):
        await worker.settler.ack(d)  # raised ConnectionClosedError before
        assert d.outcome is Disposition.NAK  # counted as what it is: not acked
        await worker.settler.settle(d, RuntimeError("boom"))
    assert sum("the server will redeliver" in r.getMessage() for r in caplog.records) == 2
    info = await ctx.js.consumer_info(STREAM_BENCH, worker.durable)
    assert info.num_ack_pending == 1  # not acked: it comes back after the ack wait


async def test_a_dead_letter_too_big_for_max_payload_goes_without_its_body(
    nc: NATS, streams: None, settings: Settings
) -> None:
    body = b"{" + b" " * (nc.max_payload - 300) + b"}"  # fits; with the DLQ headers it would not
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        ack = await nc.jetstream().publish(
            BENCH_HOPS[1].for_workspace(WS), body, headers={h.MSG_ID: "big-1"})
        letters = await seen.wait_count("mumu.dlq.", 1, timeout=15)
        await seen.wait_count("mumu.error.", 1)
    letter = letters[0]
    assert letter.data == b""
    assert letter.headers[h.DLQ_BODY_OMITTED] == "true"
    assert letter.headers[h.DLQ_BODY_SIZE] == str(len(body))
    assert letter.headers[h.DLQ_STREAM] == STREAM_BENCH
    assert letter.headers[h.DLQ_SEQUENCE] == str(ack.seq)
    assert letter.headers[h.DLQ_CODE] == "schema_violation"
    parsed = DeadLetterHeaders.model_validate(letter.headers)  # the documented contract
    assert parsed.body_omitted == "true" and parsed.body_size == len(body)
    worker_durable = RouteWorker(_context(nc, settings), stage.routes()[0],
                                 Publisher(nc, StageMetrics("x"))).durable
    info = await nc.jetstream().consumer_info(STREAM_BENCH, worker_durable)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0  # terminated once
    # `mumu dlq replay` takes the body (and headers) from the original stream message
    stored = [s async for s in dlq.letters(nc)][0]
    async with Collector(nc, BENCH_HOPS[1].wildcard) as again:
        assert await dlq.replay(nc, stored) == BENCH_HOPS[1].for_workspace(WS)
        replayed = await again.wait_count("mumu.bench.", 1)
    assert replayed[0].data == body
    assert replayed[0].headers[h.MSG_ID] == f"big-1:replay:{stored.seq}"

