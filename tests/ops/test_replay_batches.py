"""--to-stage publishes in pipelined atomic batches; a batch the server refuses (an id it
already holds after a resume, a stream without atomic batches) goes again one by one and
the stream still holds each replayed message once."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from mumu.broker.jsapi import api, stream_config
from mumu.contracts import consumers
from mumu.contracts.subjects import STREAM_RESULTS, TRANSCRIPT_FINAL
from mumu.ops import replay
from mumu.ops.plan import Plan
from mumu.ops.selection import Selection
from tests.ops.replaying import store, transcript

WS = "ws-batch"
N = 1200  # three batches


async def _replayed(nc: NATS) -> int:
    info = await nc.jetstream().stream_info(
        STREAM_RESULTS, subjects_filter=consumers.PERSIST_RESULTS.replay.wildcard)
    return sum((info.state.subjects or {}).values())


def _plan(replay_id: str) -> Plan:
    return Plan(Selection.of(TRANSCRIPT_FINAL.wildcard), "to-stage", stage="persist",
                replay_id=replay_id)


async def test_a_repeated_replay_id_is_deduplicated_batch_by_batch(
    nc: NATS, streams: None,
) -> None:
    for i in range(N):
        await store(nc, transcript(WS, f"q{i}"))
    first = await replay.run(nc, _plan("same"), candidates=[STREAM_RESULTS])
    assert first.detail["published"] == N and await _replayed(nc) == N
    # as a resume that publishes again what was in flight: every batch holds known ids
    again = await replay.run(nc, _plan("same"), candidates=[STREAM_RESULTS])
    assert again.detail["published"] == N
    assert await _replayed(nc) == N  # the stream dropped every repeat
    other = await replay.run(nc, _plan("other"), candidates=[STREAM_RESULTS])
    assert other.detail["published"] == N and await _replayed(nc) == 2 * N


async def test_a_stream_without_atomic_batches_gets_the_messages_one_by_one(
    nc: NATS, streams: None,
) -> None:
    live = await stream_config(nc, STREAM_RESULTS)
    assert live is not None and live.get("allow_atomic") is True
    await api(nc, f"STREAM.UPDATE.{STREAM_RESULTS}", {**live, "allow_atomic": False})
    for i in range(N):
        await store(nc, transcript(WS, f"q{i}"))
    outcome = await replay.run(nc, _plan("plain"), candidates=[STREAM_RESULTS])
    assert outcome.detail["published"] == N
    assert await _replayed(nc) == N


async def test_a_whole_stream_replayed_to_a_stage_reads_only_its_inputs(
    nc: NATS, streams: None,
) -> None:
    js = nc.jetstream()
    for i in range(30):
        await store(nc, transcript(WS, f"q{i}"))
        for n in range(3):  # live steps persist does not consume
            await js.publish(f"mumu.answer.delta.{WS}", b"{}", headers={"Nats-Msg-Id": f"{i}.{n}"})
    outcome = await replay.run(
        nc, Plan(Selection.of(STREAM_RESULTS), "to-stage", stage="persist"),
        candidates=[STREAM_RESULTS])
    assert outcome.detail["published"] == 30 and await _replayed(nc) == 30
    assert outcome.read == 30  # the deltas were filtered out by the server
    assert outcome.detail["not_stage_inputs"] == {}
