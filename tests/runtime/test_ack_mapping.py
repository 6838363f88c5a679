"""Ack mapping of the stage runtime, on a real nats-server."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import PipelineError, new_id
from mumu.settings import Settings
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping

WS = "ws-test"


def ping(behaviour: str = "ok", **kw: object) -> Ping:
    rid = new_id()
    return Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s1", behaviour=behaviour, **kw)  # type: ignore[arg-type]


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def publish(nc: NATS, p: Ping, traceparent: str | None = None) -> None:
    js = nc.jetstream()
    headers = {h.MSG_ID: p.event_id}
    if traceparent is not None:
        headers[h.TRACEPARENT] = traceparent
    await js.publish(
        BENCH_HOPS[1].for_workspace(WS), p.model_dump_json().encode(), headers=headers,
    )


async def test_ok_message_is_forwarded_once(nc: NATS, streams: None, settings: Settings) -> None:
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        p, fresh = ping(), ping()
        await publish(nc, p, traceparent=PARENT)
        await publish(nc, fresh)
        out = await seen.wait_count("mumu.bench.hop2.", 2)
        await asyncio.sleep(0.3)  # a duplicate would have arrived by now
    by_request = {Ping.model_validate_json(m.data).request_id: m for m in out}
    assert set(by_request) == {p.request_id, fresh.request_id}
    assert len(seen.on("mumu.bench.hop2.")) == 2
    forwarded = by_request[p.request_id]
    # the deterministic id the handler derived, set by the runtime as Nats-Msg-Id
    assert forwarded.headers[h.MSG_ID] == Ping.model_validate_json(forwarded.data).event_id
    # the output continues the input's trace (no exporter here: no span of its own, so
    # the incoming parent is carried as is; with one, tests/runtime/test_tracing.py)
    assert forwarded.headers[h.TRACEPARENT] == PARENT
    # a message without a trace starts a new one, never PARENT's
    version, trace_id, span_id, flags = by_request[fresh.request_id].headers[
        h.TRACEPARENT].split("-")
    assert (version, flags) == ("00", "01")
    assert len(trace_id) == 32 and len(span_id) == 16
    assert trace_id != PARENT.split("-")[1]


async def test_transient_error_is_redelivered_with_delay(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        t0 = time.monotonic()
        await publish(nc, ping("flaky"))
        await seen.wait_count("mumu.bench.hop2.", 1)
        elapsed = time.monotonic() - t0
    assert [d for _, d in stage.calls] == [1, 2]
    assert elapsed >= settings.stage.backoff[0]  # nak'ed with a delay, not at once
    assert not seen.on("mumu.dlq.")


async def test_permanent_error_gives_one_dead_letter_with_reason(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        bad = ping("permanent")
        await publish(nc, bad)
        good = ping()
        await publish(nc, good)
        letters = await seen.wait_count("mumu.dlq.", 1)
        await seen.wait_count("mumu.bench.hop2.", 1)  # the consumer keeps flowing
        errors = await seen.wait_count("mumu.error.", 1)
        await asyncio.sleep(0.5)  # a second letter or error would have arrived by now
    assert len(seen.on("mumu.dlq.")) == 1 and len(seen.on("mumu.error.")) == 1
    letter = letters[0]
    # the letter's subject names its stage and the original's workspace
    assert letter.subject == subjects.DLQ.stage("passthrough").for_workspace(
        subjects.last_token(letter.headers[h.DLQ_SUBJECT]))
    assert letter.headers[h.DLQ_CODE] == "unsupported_audio"
    assert "never work" in letter.headers[h.DLQ_REASON]
    assert letter.headers[f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}"] == bad.event_id
    assert letter.data == bad.model_dump_json().encode()
    err = PipelineError.model_validate_json(errors[0].data)
    assert err.code == "unsupported_audio"
    assert err.request_id == bad.request_id
    assert errors[0].subject == f"mumu.error.{WS}"
    assert [r for r, _ in stage.calls].count(bad.request_id) == 1


async def test_schema_violation_is_dead_lettered_without_calling_the_handler(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        js = nc.jetstream()
        await js.publish(
            BENCH_HOPS[1].for_workspace(WS),
            b'{"request_id": "r-1", "session_id": "s-1", "hop": "not a number"}',
        )
        letters = await seen.wait_count("mumu.dlq.", 1)
        errors = await seen.wait_count("mumu.error.", 1)
    assert letters[0].headers[h.DLQ_CODE] == "schema_violation"
    assert "hop" in letters[0].headers[h.DLQ_REASON]
    assert PipelineError.model_validate_json(errors[0].data).request_id == "r-1"
    assert stage.calls == []


async def test_handler_failing_every_time_is_dead_lettered_after_max_deliver(
    nc: NATS, streams: None, settings: Settings
) -> None:
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        await publish(nc, ping("transient"))
        letters = await seen.wait_count("mumu.dlq.", 1, timeout=15)
    assert [d for _, d in stage.calls] == [1, 2, 3]
    assert letters[0].headers[h.DLQ_DELIVERIES] == "3"
    assert "gave up after 3 deliveries" in letters[0].headers[h.DLQ_REASON]
