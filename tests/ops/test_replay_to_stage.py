"""`mumu replay --to-stage persist` on the real stages and PostgreSQL: only persist handles
the transcripts again; reason (the LLM) and the clients' live feed see nothing; rows and
confirmations stay single."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import consumers
from mumu.contracts import headers as h
from mumu.contracts.events import TextAsk, new_id
from mumu.contracts.subject_check import covers
from mumu.contracts.subjects import (
    INGEST_TEXT,
    PERSISTED,
    STREAM_INGEST,
    STREAM_PERSISTED,
    STREAM_RESULTS,
)
from mumu.gateway.feed import result_filters
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from mumu.stages.reason.stage import ReasonStage
from tests.conftest import provision
from tests.harness import Collector, running
from tests.ops.replaying import consumer_states, mumu_json, store, transcript
from tests.persist.events import merged
from tests.pg_fixtures import WorkspaceFactory
from tests.reason.echo_backend import EchoBackend

N = 4


async def _count(nc: NATS, stream: str, filters: list[str]) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=">")
    stored = info.state.subjects or {}
    return sum(n for s, n in stored.items() if any(covers(f, s) for f in filters))


async def _settled(nc: NATS, durable: str, delivered: int, timeout: float = 20.0) -> None:
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(STREAM_RESULTS, durable)
            if info.delivered.consumer_seq >= delivered and not info.num_ack_pending \
                    and not info.num_pending:
                return
            await asyncio.sleep(0.05)


async def test_transcripts_replayed_into_persist_reach_only_persist(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
    pg_settings: Settings, workspace: WorkspaceFactory, admin_conn: asyncpg.Connection,
) -> None:
    cfg = merged(settings, pg_settings, batch_rows=8, writers=1)
    ws, _ = await workspace("replay")
    await provision(nc, ws)
    backend = EchoBackend()
    events = [transcript(ws, f"question {i}") for i in range(N)]
    async with running(build_persist(cfg), cfg), running(ReasonStage(cfg.reason, backend), cfg):
        for event in events:
            await store(nc, event)
        persist = consumers.PERSIST_RESULTS.durable
        # persist writes transcripts and answers: 2 rows a request
        await _settled(nc, persist, delivered=2 * N)
        await _settled(nc, consumers.REASON_TRANSCRIPTS.durable, delivered=N)
        rows = await admin_conn.fetchval(
            "SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1", ws)
        assert rows == N
        calls = backend.calls
        before = await consumer_states(nc, STREAM_RESULTS)
        feed = await _count(nc, STREAM_RESULTS, result_filters())
        confirmations = await _count(nc, STREAM_PERSISTED, [PERSISTED.wildcard])

        async with Collector(nc) as seen:
            summary = await mumu_json(nats_server, "replay", "mumu.transcript.final.*",
                                      "--to-stage", "persist")
            assert summary["published"] == N and summary["selected"] == N
            await _settled(nc, persist, delivered=2 * N + N)
            await seen.wait_count(PERSISTED.prefix, N)  # persist confirmed each one again

    after = await consumer_states(nc, STREAM_RESULTS)
    # reason's durable did not move, so the LLM was not asked again
    assert after[consumers.REASON_TRANSCRIPTS.durable] == before[consumers.REASON_TRANSCRIPTS.durable]
    assert backend.calls == calls
    assert not seen.on("mumu.answer.")
    # nothing new on what the gateway's live feed reads (its filters), so no socket saw it
    assert await _count(nc, STREAM_RESULTS, result_filters()) == feed
    assert not [m for m in seen.messages if any(covers(f, m.subject) for f in result_filters())]
    # persist handled each once more: still one row each, confirmations deduplicated
    assert await admin_conn.fetchval(
        "SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1", ws) == N
    assert await _count(nc, STREAM_PERSISTED, [PERSISTED.wildcard]) == confirmations
    # what was published: on persist's replay subject, marked as a replay
    replays = [m for m in seen.messages if m.subject.startswith("mumu.replay.")]
    assert {m.subject for m in replays} == {consumers.PERSIST_RESULTS.replay.for_workspace(ws)}
    assert len(replays) == N
    for m in replays:
        assert m.headers[h.REPLAY] == summary["replay_id"]
        assert m.headers[h.REPLAY_SUBJECT] == f"mumu.transcript.final.{ws}"
        assert m.headers[h.MSG_ID].endswith(f":replay:{summary['replay_id']}")


async def test_a_text_ask_replayed_to_reason_reaches_reason_alone_and_no_second_final(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
) -> None:
    ws = "ws-text"
    await provision(nc, ws)
    backend = EchoBackend()
    js = nc.jetstream()
    async with running(ReasonStage(settings.reason, backend), settings), Collector(nc) as seen:
        rid = new_id()
        ask = TextAsk(event_id=rid, request_id=rid, workspace_id=ws, session_id="s1",
                      text="Is it replayed?")
        await js.publish(INGEST_TEXT.for_workspace(ws), ask.model_dump_json().encode(),
                         headers={h.MSG_ID: rid})
        await seen.wait_count("mumu.answer.final.", 1)
        calls = backend.calls
        # MUMU_INGEST only sources the intake streams: the replay reads it like any other
        summary = await mumu_json(nats_server, "replay", "MUMU_INGEST", "--request-id", rid,
                                  "--to-stage", "reason")
        assert summary["published"] == 1
        replayed = consumers.REASON_TEXT.replay.for_workspace(ws)
        await seen.wait_count(replayed, 1)
        async with asyncio.timeout(20):  # reason handled (and acked) the replayed ask
            while (info := await js.consumer_info(
                    STREAM_INGEST, consumers.REASON_TEXT.durable)).delivered.consumer_seq < 2 \
                    or info.num_ack_pending:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a second final would have arrived by now
    # reason handled it: its session already holds the answer (no new LLM call), and the
    # runtime's record says that final is stored (docs/runtime.md "Exactly one final"):
    # it is not published again, so no client sees a second final
    assert backend.calls == calls
    assert len(seen.on("mumu.answer.final.")) == 1
    info = await js.stream_info(STREAM_RESULTS, subjects_filter="mumu.answer.final.*")
    assert sum((info.state.subjects or {}).values()) == 1
    assert not seen.on(INGEST_TEXT.prefix + ".")[1:]  # nothing republished on the intake
