"""The persist batch handler with in-memory deliveries (``Inbound.of``): a real PostgreSQL,
no NATS server. The same behaviours run through the runtime in ``test_stage.py``."""

from __future__ import annotations

import asyncpg

from mumu.contracts.events import Persisted
from mumu.crypto import Keyring
from mumu.db.history import session_history
from mumu.db.owned_pool import OwnedPool
from mumu.runtime import Inbound, PermanentError, UnavailableError
from mumu.settings import Settings
from mumu.stages.persist.settings import PersistSettings
from mumu.stages.persist.stage import PersistStage
from tests.persist.events import answer, transcript
from tests.pg_fixtures import WorkspaceFactory


def inbound(event: object, subject: str) -> Inbound[object]:
    return Inbound.of(event, subject=subject)  # type: ignore[arg-type]


async def test_a_batch_is_written_and_confirmed_row_by_row_in_memory(
    pg_settings: Settings, workspace: WorkspaceFactory, app_pool: asyncpg.Pool,
    keyring: Keyring,
) -> None:
    ws, _ = await workspace()
    said = transcript(ws, "remember the milk", session="mem")
    answered = answer(ws, "remember the milk", "noted", session="mem", rid=said.request_id)
    foreign = transcript(ws, "wrong subject", session="mem")
    pool = OwnedPool.app(pg_settings.database, max_size=2)
    stage = PersistStage(PersistSettings(), keyring, pool)
    try:
        results = await stage.handle_batch([
            inbound(said, f"mumu.transcript.final.{ws}"),
            inbound(answered, f"mumu.answer.final.{ws}"),
            inbound(foreign, "mumu.transcript.final.00000000-0000-4000-8000-000000000000"),
        ])
    finally:
        await pool.close()
    ok_t, ok_a, bad = results
    assert not isinstance(ok_t, BaseException) and not isinstance(ok_a, BaseException)
    confirmations = [Persisted.model_validate_json(o.payload) for o in (*ok_t, *ok_a)]
    assert [(c.kind, c.source_event_id) for c in confirmations] == [
        ("transcript", said.event_id), ("answer", answered.event_id)]
    # a body naming another workspace than its subject: that message alone is refused
    assert isinstance(bad, PermanentError)
    assert bad.code == "schema_violation" and ws in bad.message
    history = await session_history(app_pool, keyring, ws, "mem")
    assert [(i.kind, i.text) for i in history] == [("transcript", "remember the milk"),
                                                   ("answer", "noted")]


async def test_a_database_that_is_down_is_unavailable_for_the_runtime_to_hold(
    pg_settings: Settings, workspace: WorkspaceFactory, keyring: Keyring,
) -> None:
    ws, _ = await workspace()
    down = pg_settings.model_copy(update={
        "database_url": pg_settings.database_url.__class__(  # type: ignore[union-attr]
            "postgresql://mumu_app:x@127.0.0.1:1/mumu"),
        "persist": PersistSettings(connect_timeout=1.0)})
    pool = OwnedPool.app(down.database)
    stage = PersistStage(down.persist, keyring, pool)
    try:
        (result,) = await stage.handle_batch(
            [inbound(transcript(ws, "later"), f"mumu.transcript.final.{ws}")])
    finally:
        await pool.close()
    assert isinstance(result, UnavailableError)
    assert result.reason == "database_unavailable"
