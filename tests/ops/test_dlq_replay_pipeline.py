"""A replayed dead letter produces its output: a text ask dead-lettered by reason while
its LLM backend was down is answered and persisted after `mumu dlq replay`, once the
backend is back (the real llama.cpp server, the real stages, PostgreSQL)."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import Persisted, TextAsk, new_id
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from mumu.stages.reason.stage import build_stage as build_reason
from tests.conftest import provision
from tests.harness import Collector, running
from tests.ops.replaying import mumu, mumu_json
from tests.persist.events import merged
from tests.pg_fixtures import WorkspaceFactory
from tests.reason.asks import finals_of, wait_final
from tests.reason.conftest import ModelServer, reason_settings
from tests.reason.fault_proxy import FaultProxy, serving


async def test_a_replayed_dead_letter_is_answered_and_persisted(
    nats_server: EmbeddedNats, nc: NATS, streams: None, settings: Settings,
    pg_settings: Settings, workspace: WorkspaceFactory, admin_conn: asyncpg.Connection,
    model_server: ModelServer,
) -> None:
    ws, _ = await workspace("dlq")
    await provision(nc, ws)
    down = [(503, None)] * settings.stage.max_deliver  # every delivery meets a dead backend
    fault = FaultProxy(model_server.base_url, down)
    async with serving(fault) as url:
        cfg = reason_settings(merged(settings, pg_settings), url)
        async with running(build_persist(cfg), cfg), running(build_reason(cfg), cfg), \
                Collector(nc) as seen:
            rid = new_id()
            ask = TextAsk(event_id=rid, request_id=rid, workspace_id=ws, session_id=new_id(),
                          text="What is the capital of France?")
            await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(ws),
                                         ask.model_dump_json().encode(), headers={h.MSG_ID: rid})
            await seen.wait_count("mumu.dlq.reason", 1, timeout=30)
            assert not finals_of(seen, rid)

            listed = await mumu_json(nats_server, "dlq", "ls")
            assert [(g["stage"], g["code"], g["count"]) for g in listed["groups"]] == [
                ("reason", "reason_unavailable", 1)]
            assert not fault.faults  # the backend is back from now on
            seq = listed["groups"][0]["last_seq"]
            code, out, err = await mumu(nats_server, "dlq", "replay", str(seq))
            assert code == 0, err
            assert f"→ {subjects.INGEST_TEXT.for_workspace(ws)}" in out

            final = await wait_final(seen, rid, timeout=60)
            assert "Paris" in final.text
            await seen.wait_for(lambda _: any(
                Persisted.model_validate_json(m.data).kind == "answer"
                and Persisted.model_validate_json(m.data).request_id == rid
                for m in seen.on(subjects.PERSISTED.prefix)), timeout=20)
    async with asyncio.timeout(5):
        rows = await admin_conn.fetchval(
            "SELECT count(*) FROM mumu.answers WHERE workspace_id = $1", ws)
    assert rows == 1
    left = await mumu_json(nats_server, "dlq", "ls")
    assert left["total"] == 0  # replayed letters leave the queue
