"""PostgreSQL stopped for 20 s in the middle of 2,000 events: nothing lost, nothing twice;
and a stage started while PostgreSQL is down writes everything once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.contracts.events import Persisted
from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import apply_migrations, ensure_app_login
from mumu.db.urls import with_user
from mumu.db.workspaces import create_workspace
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage
from tests.harness import Collector, running
from tests.persist.events import drained, publish, transcript
from tests.pg_fixtures import pgdata_dir

EVENTS = 2_000
OUTAGE = 20.0


@pytest.fixture
async def own_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A cluster of this test alone: stopping it disturbs no other test."""
    with pgdata_dir() as pgdata:
        server = EmbeddedPostgres(pgdata)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


async def _migrated(pg: EmbeddedPostgres, app_user: str) -> tuple[str, str, str, str]:
    """Migrations, an application login and one workspace: (admin url, app url, keys, ws)."""
    admin_url = pg.url()
    app_url = with_user(admin_url, app_user, secrets.token_urlsafe(12))
    master = MasterKey.generate("k1").encoded()
    admin = await asyncpg.connect(admin_url)
    try:
        await apply_migrations(admin)
        await ensure_app_login(admin, app_url)
        ws = (await create_workspace(admin, DataKeys(Keyring.parse(master)), "load")).workspace_id
    finally:
        await admin.close()
    return admin_url, app_url, master, ws


async def test_postgres_down_for_20s_mid_load_loses_and_duplicates_nothing(
    nc: NATS, streams: None, settings: Settings, own_postgres: EmbeddedPostgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    admin_url, app_url, master, ws = await _migrated(own_postgres, "mumu_outage_app")
    stage_settings = settings.model_copy(update={
        "database_url": SecretStr(app_url), "database_admin_url": SecretStr(admin_url),
        "master_keys": SecretStr(master),
        "persist": settings.persist.model_copy(update={
            "batch_rows": 64, "retry_max_delay": 1.0, "connect_timeout": 2.0,
        }),
    })
    events = [transcript(ws, f"utterance {i}", session=f"s{i % 20}") for i in range(EVENTS)]

    async def produce() -> None:  # ~8 s of steady load
        for i, event in enumerate(events):
            await publish(nc, event)
            if i % 50 == 49:
                await asyncio.sleep(0.2)

    stage = build_stage(stage_settings)
    async with running(stage, stage_settings), Collector(nc, "mumu.>") as seen:
        producer = asyncio.create_task(produce())
        await seen.wait_count("mumu.persisted.", 300, timeout=30)
        await own_postgres.stop()
        down_at = time.monotonic()
        stored_before = len(seen.on("mumu.persisted."))
        await asyncio.sleep(OUTAGE)
        # nothing can be confirmed while the database is down
        assert len({m.data for m in seen.on("mumu.persisted.")}) <= stored_before + 64 * 4
        await own_postgres.start()
        up_after = time.monotonic() - down_at
        await producer
        await seen.wait_for(
            lambda _: len({Persisted.model_validate_json(m.data).source_event_id
                           for m in seen.on("mumu.persisted.")}) >= EVENTS,
            timeout=90,
        )
        await drained(nc, timeout=30)
        retried = list(seen.on("mumu.error."))

    assert up_after >= OUTAGE
    assert not seen.on("mumu.dlq."), "a database outage must never dead-letter"
    assert not retried
    # the outage really hit in-flight work: nak'ed with a delay, then held, never termed
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying in" in m and "database unavailable" in m for m in messages)
    assert stage.metrics is not None
    registry = stage.metrics.registry  # the stage's own metrics sit on the runtime's registry
    assert (registry.get_sample_value(
        "mumu_persist_failed_batches_total", {"reason": "database_unavailable"}) or 0) > 0
    # what the runtime did about it: naks, then holds on the last delivery, never a term
    route = {"stage": "persist", "route": "mumu_results"}
    outcome = {o: registry.get_sample_value("mumu_stage_messages_total", {**route, "outcome": o})
               for o in ("nak", "hold", "term")}
    assert outcome["nak"] and outcome["hold"] and outcome["term"] == 0, outcome
    assert registry.get_sample_value(
        "mumu_stage_held_messages", {**route, "reason": "database_unavailable"}) == 0
    admin = await asyncpg.connect(admin_url)
    try:
        rows = await admin.fetchval("SELECT count(*) FROM mumu.transcripts")
        distinct = await admin.fetchval("SELECT count(DISTINCT event_id) FROM mumu.transcripts")
    finally:
        await admin.close()
    assert (rows, distinct) == (EVENTS, EVENTS)  # 0 lost, 0 duplicates
    stream = await nc.jetstream().stream_info("MUMU_PERSISTED")
    assert stream.state.messages == EVENTS  # one confirmation per event
    with contextlib.suppress(Exception):
        await nc.flush()


async def test_stage_starts_while_postgres_is_down_and_writes_when_it_returns(
    nc: NATS, streams: None, settings: Settings, own_postgres: EmbeddedPostgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    admin_url, app_url, master, ws = await _migrated(own_postgres, "mumu_late_app")
    await own_postgres.stop()
    stage_settings = settings.model_copy(update={
        "database_url": SecretStr(app_url), "master_keys": SecretStr(master),
        "persist": settings.persist.model_copy(update={
            "retry_max_delay": 0.5, "connect_timeout": 2.0}),
    })
    events = [transcript(ws, f"early {i}") for i in range(20)]
    stage = build_stage(stage_settings)
    async with running(stage, stage_settings), Collector(nc, "mumu.>") as seen:
        for event in events:
            await publish(nc, event)
        await asyncio.sleep(2.0)  # delivered, nak'ed (and held on the last delivery)
        assert not seen.on("mumu.persisted.")
        await own_postgres.start()
        await seen.wait_count("mumu.persisted.", len(events), timeout=30)
        await drained(nc, timeout=15)
    assert not seen.on("mumu.dlq.")
    assert any("database unavailable" in r.getMessage() or "database_unavailable"
               in r.getMessage() for r in caplog.records)
    admin = await asyncpg.connect(admin_url)
    try:
        assert await admin.fetchval("SELECT count(DISTINCT event_id) FROM mumu.transcripts") == 20
    finally:
        await admin.close()
