"""An output whose stream answers nothing (no leader during an election: JetStream's "no
responders") is published again in place until the stream answers, not nak'ed at once: a
nak sent while the input's consumer elects a leader can be lost, and the input would wait
out its whole ack_wait (tests/cluster/test_failover.py found 30 s without an answer)."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from mumu.runtime import publisher as publisher_module
from mumu.runtime.errors import TransientError
from mumu.runtime.messages import Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher

SUBJECT = "test.leaderless.one"


async def test_a_publish_waits_in_place_for_its_stream_to_answer(nc: NATS) -> None:
    metrics = StageMetrics("x")
    publisher = Publisher(nc, metrics)
    out = Outbound(SUBJECT, b"{}", "leaderless-1")
    started = time.monotonic()
    publishing = asyncio.create_task(publisher.publish(out, {}))
    await asyncio.sleep(1.0)  # nothing answers on the subject: as while no leader is elected
    assert not publishing.done()
    await nc.jetstream().add_stream(StreamConfig(name="T_LEADERLESS", subjects=["test.leaderless.>"]))
    ack = await asyncio.wait_for(publishing, 10)
    assert ack.stream == "T_LEADERLESS" and ack.seq == 1 and not ack.duplicate
    assert time.monotonic() - started >= 1.0
    retries = metrics.registry.get_sample_value("mumu_stage_publish_retries_total", {"stage": "x"})
    assert retries is not None and retries >= 2


async def test_a_stream_that_never_answers_fails_the_publish_as_transient(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "LEADERLESS_FOR", 1.0)
    publisher = Publisher(nc, StageMetrics("x"))
    started = time.monotonic()
    with pytest.raises(TransientError, match="NoStreamResponse"):
        await publisher.publish(Outbound("test.nowhere.one", b"{}", "nowhere-1"), {})
    assert 0.5 <= time.monotonic() - started < 3.0
