"""One workspace whose data key cannot be unwrapped, in the same batches as healthy
workspaces: the healthy rows are written and acked at once, the stage keeps fetching
while the bad workspace's messages are held, and those are dead-lettered (clearly) when
their hold limit is reached, so they never keep the stage's in-flight slots."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from nats.aio.client import Client as NATS

from mumu.contracts.events import DeadLetterHeaders
from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.history import session_history
from mumu.db.workspaces import create_workspace
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage
from tests.harness import Collector, running
from tests.persist.events import drained, merged, publish, transcript
from tests.pg_fixtures import WorkspaceFactory

HELD = {"stage": "persist", "route": "mumu_results", "reason": "keyring"}
BAD, GOOD = 4, 12  # one batch of 16: the whole in-flight window (batch_rows 16, 1 writer)
HOLD_LIMIT = 3.0


async def _bad_workspace(admin_conn: asyncpg.Connection) -> str:
    """A workspace whose data key is wrapped by a master key the stage does not have."""
    return (await create_workspace(
        admin_conn, DataKeys(Keyring.parse(MasterKey.generate("k9").encoded())), "bad",
    )).workspace_id


def _last_is_first(cfg: Settings) -> Settings:
    """Every delivery is the last one: a failing message is held on its first."""
    return cfg.model_copy(update={"stage": cfg.stage.model_copy(update={"max_deliver": 1})})


async def test_a_workspace_with_an_unusable_key_never_holds_the_others(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, app_pool: asyncpg.Pool,
    keyring: Keyring,
) -> None:
    # the first mixed batch already holds the bad group
    cfg = _last_is_first(merged(settings, pg_settings, batch_rows=BAD + GOOD, writers=1,
                                retry_max_delay=0.3, key_hold_limit=HOLD_LIMIT))
    healthy = [(await workspace("a"))[0], (await workspace("b"))[0]]
    bad = await _bad_workspace(admin_conn)

    first = [transcript(healthy[i % 2], f"first {i}") for i in range(GOOD)]
    stuck = [transcript(bad, f"stuck {i}") for i in range(BAD)]
    for i, event in enumerate(first):  # interleaved, all in one fetch
        if i % 3 == 0 and stuck:
            await publish(nc, stuck.pop())
        await publish(nc, event)
    while stuck:
        await publish(nc, stuck.pop())

    stage = build_stage(cfg)
    async with Collector(nc) as seen:
        started = time.monotonic()
        async with running(stage, cfg):
            assert stage.metrics is not None
            registry = stage.metrics.registry
            await seen.wait_count("mumu.persisted.", GOOD, timeout=5)
            async with asyncio.timeout(5):  # the bad group is held on its last delivery
                while registry.get_sample_value("mumu_stage_held_messages", HELD) != BAD:
                    await asyncio.sleep(0.05)
            # the stage keeps flowing while they are held: another full window of rows
            later = [transcript(healthy[i % 2], f"later {i}") for i in range(BAD + GOOD)]
            for event in later:
                await publish(nc, event)
            await seen.wait_count("mumu.persisted.", GOOD + len(later), timeout=5)
            assert time.monotonic() - started < HOLD_LIMIT  # not after the hold ended
            assert not seen.on("mumu.dlq.")
            assert registry.get_sample_value("mumu_stage_held_messages", HELD) == BAD

            # the hold is bounded: then dead letters that say why, and nothing in flight
            letters = await seen.wait_count("mumu.dlq.persist", BAD, timeout=HOLD_LIMIT + 5)
            await drained(nc)
            assert registry.get_sample_value("mumu_stage_held_messages", HELD) == 0

    for letter in letters:
        dlq = DeadLetterHeaders.model_validate(letter.headers)
        assert dlq.code == "persist_failed"
        assert dlq.subject.endswith(f".{bad}")
        assert f"the data key of workspace {bad} cannot be unwrapped" in dlq.reason
        assert "'k9'" in dlq.reason
    errors = [e.json() for e in seen.on("mumu.error.")]
    assert sorted(e["workspace_id"] for e in errors) == [bad] * BAD
    persisted = [m.json()["workspace_id"] for m in seen.on("mumu.persisted.")]
    assert sorted(persisted) == sorted(e.workspace_id for e in first + later)
    for ws in healthy:
        rows = await session_history(app_pool, keyring, ws, "s1")
        assert sorted(r.text for r in rows) == sorted(
            e.text for e in first + later if e.workspace_id == ws)


async def test_one_workspace_holds_at_most_its_share_of_the_in_flight_slots(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection,
) -> None:
    cfg = _last_is_first(merged(settings, pg_settings, batch_rows=16, writers=1,
                                retry_max_delay=0.3, key_hold_limit=HOLD_LIMIT,
                                key_held_per_workspace=2))
    good, bad = (await workspace("a"))[0], await _bad_workspace(admin_conn)
    for i in range(BAD):
        await publish(nc, transcript(bad, f"stuck {i}"))
        await publish(nc, transcript(good, f"fine {i}"))
    stage = build_stage(cfg)
    async with Collector(nc) as seen, running(stage, cfg):
        assert stage.metrics is not None
        registry = stage.metrics.registry
        await seen.wait_count("mumu.persisted.", BAD, timeout=5)
        # two held (the most for one workspace), the other two dead-lettered at once
        first = await seen.wait_count("mumu.dlq.persist", BAD - 2, timeout=2)
        assert registry.get_sample_value("mumu_stage_held_messages", HELD) == 2
        await asyncio.sleep(0.5)
        assert len(seen.on("mumu.dlq.")) == BAD - 2
        letters = await seen.wait_count("mumu.dlq.persist", BAD, timeout=HOLD_LIMIT + 5)
        await drained(nc)
        assert registry.get_sample_value("mumu_stage_held_messages", HELD) == 0
    assert {DeadLetterHeaders.model_validate(m.headers).subject for m in letters} == {
        f"mumu.transcript.final.{bad}"}
    assert all("cannot be unwrapped" in DeadLetterHeaders.model_validate(m.headers).reason
               for m in first)
