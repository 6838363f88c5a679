"""Storage bounds on a real nats-server: a workspace filling a shared stream is stopped at
its own limit, and another workspace still gets answers (``docs/reliability.md``).

The limits are the shipped files' with smaller numbers (the test's sizes, not production's).
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH, bench_stream_config
from mumu.broker.bounds import SHARES, StorageBoundError, share_problems
from mumu.broker.streams import (
    apply_buckets,
    apply_stream,
    load_bucket_configs,
    load_stream_configs,
)
from mumu.broker.workspaces import ensure_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import AnswerFinal, TextAsk, new_id
from mumu.ops.status import StreamFigures, gather
from mumu.runtime.metrics import StageMetrics
from mumu.settings import Settings
from mumu.stages.reason.sessions import MAX_VALUE_BYTES, SessionStore, check_share
from mumu.stages.reason.stage import ReasonStage
from tests.conftest import provision
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping
from tests.reason.echo_backend import EchoBackend

WS_A, WS_B = "ws-fill", "ws-other"
PER_SUBJECT_ERROR = 10077
"""JetStream's ``maximum messages per subject exceeded``."""


async def limit(nc: NATS, name: str, **overrides: Any) -> dict[str, Any]:
    """Stream ``name`` as its file declares it, with ``overrides``; the live config."""
    config = next(c for c in load_stream_configs() if c["name"] == name)
    await apply_stream(nc, {**config, **overrides})
    return {**config, **overrides}


async def ask(nc: NATS, ws: str, text: str, session: str = "s1") -> TextAsk:
    rid = new_id()
    event = TextAsk(event_id=rid, request_id=rid, workspace_id=ws, session_id=session, text=text)
    await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(ws),
                                 event.model_dump_json().encode(), headers={h.MSG_ID: rid})
    return event


def finals(seen: Collector, ws: str) -> list[AnswerFinal]:
    return [AnswerFinal.model_validate_json(m.data)
            for m in seen.on(subjects.ANSWER_FINAL.for_workspace(ws))]


async def answered(seen: Collector, event: TextAsk, timeout: float = 30.0) -> AnswerFinal:
    def done(_: object) -> bool:
        return any(f.request_id == event.request_id for f in finals(seen, event.workspace_id))

    await seen.wait_for(done, timeout)
    return next(f for f in finals(seen, event.workspace_id) if f.request_id == event.request_id)


async def fullness(nc: NATS, stream: str) -> StreamFigures:
    """What the exporter reports of ``stream`` (its ``fullness`` is alerted at 80 %)."""
    return next(s for s in (await gather(nc)).streams if s.name == stream)


async def stored(nc: NATS, stream: str, subject: str) -> int:
    """Messages ``stream`` holds on ``subject``."""
    info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


def test_the_shipped_limits_keep_each_workspace_to_a_share_of_every_shared_stream() -> None:
    configs = load_stream_configs()
    assert share_problems(configs, max_payload=1 << 20) == []
    by_name = {c["name"]: c for c in configs}
    for name in (subjects.STREAM_AUDIO, subjects.STREAM_RESULTS, subjects.STREAM_PERSISTED,
                 subjects.STREAM_CONTROL):
        config = by_name[name]
        assert config["discard"] == "new" and config["discard_new_per_subject"], name
        assert config["max_msgs_per_subject"] > 0, name
    # the DLQ refuses rather than dropping its oldest letters
    assert by_name[subjects.STREAM_DLQ]["discard"] == "new"
    # a workspace's intake stream (64 MiB by default) is at most a quarter of MUMU_INGEST
    assert by_name[subjects.STREAM_INGEST]["max_bytes"] >= 64 * 1024 * 1024 * SHARES
    kv = sessions_spec()
    assert kv["max_bytes"] >= 16 * MAX_VALUE_BYTES * SHARES  # 16 session slots
    assert kv["max_value_size"] >= MAX_VALUE_BYTES + 1024 and kv["ttl_seconds"] > 0
    # and the check itself fails a stream that would let one workspace fill it
    loose = {**by_name[subjects.STREAM_AUDIO], "max_msgs_per_subject": 1_000_000}
    assert share_problems([loose], max_payload=1 << 20)


async def test_an_intake_stream_that_could_fill_mumu_ingest_is_refused(
    nc: NATS, streams: None
) -> None:
    ingest = next(c for c in load_stream_configs() if c["name"] == subjects.STREAM_INGEST)
    with pytest.raises(StorageBoundError, match="MUMU_INGEST"):
        await ensure_workspace(nc, WS_A, intake_max_bytes=ingest["max_bytes"] // SHARES + 1)
    with pytest.raises(nats.js.errors.NotFoundError):  # nothing was created
        await nc.jetstream().stream_info(subjects.intake_stream(WS_A))


async def test_a_workspace_filling_its_intake_is_refused_and_another_still_gets_answers(
    nc: NATS, streams: None, settings: Settings
) -> None:
    await ensure_workspace(nc, WS_A, intake_max_bytes=16 * 1024)
    await provision(nc, WS_B)
    refused = None
    for _ in range(100):  # 16 KiB of 1 KiB asks: refused long before the 100th
        try:
            await ask(nc, WS_A, "flood " * 170)
        except nats.js.errors.APIError as exc:
            refused = exc
            break
    assert refused is not None and "maximum bytes" in str(refused).lower(), refused
    mine = await fullness(nc, subjects.intake_stream(WS_A))
    assert mine.bytes <= 16 * 1024 and (mine.fullness or 0) > 0.9  # the 80 % alert fires
    async with running(ReasonStage(settings.reason, EchoBackend()), settings), \
            Collector(nc) as seen:
        other = await ask(nc, WS_B, "Am I still served?")
        final = await answered(seen, other)
    assert final.text == "You asked: Am I still served?"
    ingest = await fullness(nc, subjects.STREAM_INGEST)
    assert ingest.max_bytes is not None  # A holds its intake's worth, no more
    assert ingest.bytes < ingest.max_bytes // SHARES and (ingest.fullness or 0) < 0.8


async def test_a_workspace_filling_mumu_results_is_stopped_at_its_subject_limit(
    nc: NATS, streams: None, settings: Settings
) -> None:
    cap = 4
    results = await limit(nc, subjects.STREAM_RESULTS, max_msgs_per_subject=cap)
    await provision(nc, WS_A)
    await provision(nc, WS_B)
    async with running(ReasonStage(settings.reason, EchoBackend()), settings), \
            Collector(nc) as seen:
        flood = [await ask(nc, WS_A, f"flood {n}") for n in range(2 * cap)]
        # A is stopped: its asks past the limit end as dead letters, refused by the stream
        letters = await seen.wait_count(subjects.DLQ.stage("reason").prefix, 1, timeout=30)
        assert "maximum messages per subject" in letters[0].headers[h.DLQ_REASON]
        # at once: a retry cannot make room, and would run the model again
        assert letters[0].headers[h.DLQ_DELIVERIES] == "1"
        other = await ask(nc, WS_B, "And me?")
        final = await answered(seen, other)
    assert final.text == "You asked: And me?"
    for pattern in (subjects.ANSWER_DELTA, subjects.ANSWER_FINAL, subjects.ERROR):
        assert await stored(nc, subjects.STREAM_RESULTS, pattern.for_workspace(WS_A)) <= cap
    assert len(finals(seen, WS_A)) < len(flood)
    state = await fullness(nc, subjects.STREAM_RESULTS)
    assert state.bytes < results["max_bytes"] // 100  # refused at A's limit, not a full stream


@pytest.mark.parametrize(("stream", "pattern"), [
    (subjects.STREAM_AUDIO, subjects.AUDIO_READY),
    (subjects.STREAM_RESULTS, subjects.TRANSCRIPT_FINAL),
    (subjects.STREAM_PERSISTED, subjects.PERSISTED),
    (subjects.STREAM_CONTROL, subjects.CONTROL_CANCEL),
])
async def test_each_shared_stream_refuses_one_workspace_at_its_limit_and_takes_another(
    nc: NATS, streams: None, stream: str, pattern: subjects.SubjectPattern
) -> None:
    cap = 5
    await limit(nc, stream, max_msgs_per_subject=cap)
    js = nc.jetstream()
    for n in range(cap):
        await js.publish(pattern.for_workspace(WS_A), b"{}", headers={h.MSG_ID: f"a{n}"})
    with pytest.raises(nats.js.errors.APIError) as refused:
        await js.publish(pattern.for_workspace(WS_A), b"{}", headers={h.MSG_ID: "a-more"})
    assert refused.value.err_code == PER_SUBJECT_ERROR
    ack = await js.publish(pattern.for_workspace(WS_B), b"{}", headers={h.MSG_ID: "b0"})
    assert ack.stream == stream and not ack.duplicate
    assert await stored(nc, stream, pattern.for_workspace(WS_A)) == cap  # nothing evicted
    assert await stored(nc, stream, pattern.for_workspace(WS_B)) == 1


async def wait_until(check: Any, timeout: float = 20.0) -> None:
    """Polls server-side or metric state; the bound is the timeout."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_full_dlq_refuses_a_letter_loudly_and_the_original_is_not_lost(
    nc: NATS, streams: None, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await limit(nc, subjects.STREAM_DLQ, max_msgs=1)
    await provision(nc, WS_A)
    metrics = StageMetrics("reason")
    refused = metrics.dead_letter_failures.labels("reason", "no_speech")
    js = nc.jetstream()
    async with running(ReasonStage(settings.reason, EchoBackend()), settings, metrics=metrics), \
            Collector(nc) as seen:
        first = await ask(nc, WS_A, "   ")  # nothing to answer: a dead letter
        await seen.wait_count(subjects.DLQ.stage("reason").prefix, 1)
        second = await ask(nc, WS_A, "   ")
        await wait_until(lambda: refused._value.get() >= 1)
        dlq = await js.stream_info(subjects.STREAM_DLQ)
        assert (dlq.state.messages, dlq.state.first_seq) == (1, 1), "the old letter is kept"
        assert any("could not dead-letter" in r.getMessage() and r.levelname == "ERROR"
                   for r in caplog.records)
        # room again: the original, never acked, is redelivered and dead-lettered
        await limit(nc, subjects.STREAM_DLQ, max_msgs=-1)
        letters = await seen.wait_count(subjects.DLQ.stage("reason").prefix, 2)
    ids = {m.headers.get(f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}") for m in letters}
    assert ids == {first.event_id, second.event_id}


def turn(ws: str, session: str, text: str) -> AnswerFinal:
    rid = new_id()
    return AnswerFinal(event_id=rid, request_id=rid, workspace_id=ws, session_id=session,
                       question=text, text=text, model="m", total_seconds=0.1)


def sessions_spec() -> dict[str, Any]:
    return next(b for b in load_bucket_configs()["key_value"]
                if b["bucket"] == subjects.BUCKET_SESSIONS)


async def test_a_workspace_opening_many_sessions_keeps_to_its_slots_of_the_sessions_kv(
    nc: NATS, streams: None, settings: Settings
) -> None:
    slots, room = 2, 2_000_000  # A may hold 2 x 200 KB: a fifth of the bucket
    spec = sessions_spec()
    await apply_buckets(nc, {"key_value": [{**spec, "max_bytes": room}]})
    kv = await nc.jetstream().key_value(subjects.BUCKET_SESSIONS)
    with pytest.raises(StorageBoundError, match="session slots"):
        await check_share(kv, slots=3)  # 3 x 200 KB x 4 > 2 MB
    await check_share(kv, slots=slots)
    writer = SessionStore(kv, max_turns=8, turn_ttl=3600, cas_attempts=20, slots=slots)
    for n in range(40):  # 40 sessions of 60 KB turns: 2.4 MB if each had its own entry
        await writer.record(turn(WS_A, f"s{n}", "x" * 30_000))
    newest = await writer.turns(WS_A, "s39")
    assert len(newest) == 1  # the newest sessions are remembered
    await writer.record(turn(WS_A, "s39", "y" * MAX_VALUE_BYTES))  # too big on its own
    assert await writer.turns(WS_A, "s39") == newest  # left out; what was there stays
    keys = [k for k in await kv.keys() if k.startswith(f"{WS_A}.")]
    assert len(keys) <= slots
    bucket = await fullness(nc, f"KV_{subjects.BUCKET_SESSIONS}")
    assert bucket.bytes <= slots * (MAX_VALUE_BYTES + 1024)
    reason = settings.reason.model_copy(update={"session_slots": slots})
    async with running(ReasonStage(reason, EchoBackend()), settings), Collector(nc) as seen:
        await provision(nc, WS_B)
        first = await answered(seen, await ask(nc, WS_B, "Remember me?", session="b1"))
        second = await answered(seen, await ask(nc, WS_B, "Again?", session="b1"))
    assert (first.text, second.text) == ("You asked: Remember me?", "You asked: Again?")
    assert [t.question for t in await writer.turns(WS_B, "b1")] == ["Remember me?", "Again?"]


async def test_a_batch_stage_still_acks_other_workspaces_when_one_is_at_its_limit(
    nc: NATS, streams: None, settings: Settings
) -> None:
    """Persist's shape (a batch route publishing confirmations): A's output is refused at
    its per-subject limit; B's requests of the same batch are published and acked at once."""
    cap = 2
    await apply_stream(nc, {**bench_stream_config(), "discard": "new",
                            "discard_new_per_subject": True, "max_msgs_per_subject": cap})
    js = nc.jetstream()
    for n in range(cap):  # A's subject is at its limit already
        await js.publish(BENCH_HOPS[2].for_workspace(WS_A), b"{}", headers={h.MSG_ID: f"a{n}"})
    pings = {ws: [Ping(event_id=(rid := new_id()), request_id=rid, workspace_id=ws,
                       session_id="s1") for _ in range(cap)] for ws in (WS_A, WS_B)}
    for p in [*pings[WS_A], *pings[WS_B]]:  # waiting before the stage starts: one batch
        await js.publish(BENCH_HOPS[1].for_workspace(p.workspace_id),
                         p.model_dump_json().encode(), headers={h.MSG_ID: p.event_id})
    stage = PassThrough(batched=True)
    async with Collector(nc) as seen, running(stage, settings):
        await seen.wait_count(BENCH_HOPS[2].for_workspace(WS_B), cap)
        letters = await seen.wait_count(subjects.DLQ.stage("passthrough").prefix, cap)
    assert stage.batches[0] == 2 * cap
    b_ids = {p.request_id for p in pings[WS_B]}
    assert [d for r, d in stage.calls if r in b_ids] == [1] * cap  # never retried
    assert {m.headers[f"{h.DLQ_ORIGINAL_PREFIX}{h.MSG_ID}"] for m in letters} == \
        {p.event_id for p in pings[WS_A]}
    assert await stored(nc, STREAM_BENCH, BENCH_HOPS[2].for_workspace(WS_A)) == cap
