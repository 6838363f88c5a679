"""Batch routes and atomic output batches, on a real nats-server (2.12+ for atomic)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts import headers as h
from mumu.contracts.events import new_id
from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.stage import Route
from mumu.settings import Settings
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping
from tests.runtime.test_ack_mapping import WS, ping, publish


async def stored(nc: NATS, stream: str, subject: str) -> list[dict[str, str]]:
    """Headers of every message stored in ``stream`` on ``subject``, in order."""
    js = nc.jetstream()
    info = await js.stream_info(stream, subjects_filter=subject)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except Exception:  # noqa: BLE001 - a deleted sequence
            continue
        if msg.subject == subject or subject.endswith(">"):
            out.append(dict(msg.headers or {}))
    return out


async def test_a_batch_with_mixed_outcomes_settles_each_message(
    nc: NATS, streams: None, settings: Settings
) -> None:
    oks = [ping() for _ in range(5)]
    bad, flaky = ping("permanent"), ping("flaky")
    for p in (*oks[:3], bad, flaky, *oks[3:]):  # waiting before the stage starts: one batch
        await publish(nc, p)
    stage = PassThrough(batched=True)
    async with Collector(nc) as seen, running(stage, settings):
        await seen.wait_count("mumu.bench.hop2.", 6)
        letters = await seen.wait_count("mumu.dlq.", 1)
    assert stage.batches[0] == 7  # the whole waiting batch in one handler call
    assert letters[0].headers[h.DLQ_CODE] == "unsupported_audio"
    assert [d for r, d in stage.calls if r == flaky.request_id] == [1, 2]
    out = await stored(nc, STREAM_BENCH, BENCH_HOPS[2].for_workspace(WS))
    assert len(out) == 6  # every output stored once
    first_batch = [m for m in out if m.get(h.BATCH_ID)]
    assert len(first_batch) == 5  # the five oks of the first batch: one atomic batch
    assert len({m[h.BATCH_ID] for m in first_batch}) == 1


def outputs(n: int, subject: str) -> list[tuple[Outbound, dict[str, str]]]:
    return [(Outbound(subject, json.dumps({"i": i}).encode(), f"id-{new_id()}"), {})
            for i in range(n)]


@pytest.mark.parametrize("allow_atomic", [True, False])
async def test_publish_all_stores_each_output_once_even_on_redelivery(
    nc: NATS, allow_atomic: bool
) -> None:
    js = nc.jetstream()
    stream = f"T_ATOMIC_{allow_atomic}".upper()
    await nc.request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps({
        "name": stream, "subjects": [f"atomic.{allow_atomic}.>"], "storage": "file",
        "allow_atomic": allow_atomic}).encode())
    metrics = StageMetrics("t")
    publisher = Publisher(nc, metrics)
    batch = outputs(20, f"atomic.{allow_atomic}.x")
    await publisher.publish_all(batch[:12])
    await publisher.publish_all(batch)  # a redelivered batch: 12 of its ids are stored
    info = await js.stream_info(stream)
    assert info.state.messages == 20
    modes = {s.labels["mode"]: s.value for m in metrics.output_batches.collect()
             for s in m.samples if s.name.endswith("_total")}
    if allow_atomic:  # first batch atomic; the redelivery falls back to one by one
        assert modes == {"atomic": 1.0, "one_by_one": 1.0}
        await publisher.publish_all(outputs(5, f"atomic.{allow_atomic}.y"))
        assert metrics.output_batches.labels("t", "atomic")._value.get() == 2.0  # still on
    else:  # refused for the stream's config: not tried again for a while
        assert modes == {"atomic": 0.0, "one_by_one": 2.0}
        assert publisher._atomic_off_until > 0


def test_a_route_takes_exactly_one_handler() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Route("S", ("a.>",))


class _Miscounting(PassThrough):
    """A buggy batch handler: one result short."""

    async def handle_batch(
        self, inbounds: Sequence[Inbound[Ping]]
    ) -> list[Sequence[Outbound] | BaseException]:
        self.batches.append(len(inbounds))
        return [[] for _ in inbounds[1:]]


async def test_a_batch_handler_with_the_wrong_result_count_retries_then_dead_letters(
    nc: NATS, streams: None, settings: Settings
) -> None:
    for _ in range(2):
        await publish(nc, ping())
    stage = _Miscounting(batched=True)
    async with Collector(nc) as seen, running(stage, settings) as task:
        letters = await seen.wait_count("mumu.dlq.", 2)
        assert not task.done()  # the worker survived the bug
    assert len(stage.batches) >= settings.stage.max_deliver  # retried, never half-acked
    assert "results for" in letters[0].headers[h.DLQ_REASON]
    assert not seen.on("mumu.bench.hop2.")
