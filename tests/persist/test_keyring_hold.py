"""A data key this process cannot unwrap (a master key promoted before every process had
it): the persist stage holds the messages, never dead-letters, and writes them as soon as
the key unwraps again; the history read says clearly which master key is missing."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from mumu.crypto import Keyring, MasterKey, UnknownMasterKeyError
from mumu.db import keyadmin
from mumu.db.datakeys import DataKeys
from mumu.db.history import session_history
from mumu.db.records import write_records
from mumu.settings import Settings
from mumu.stages.persist.records import to_record
from mumu.stages.persist.stage import build_stage
from tests.harness import Collector, running
from tests.persist.events import drained, merged, publish, transcript
from tests.pg_fixtures import WorkspaceFactory

HELD = {"stage": "persist", "route": "mumu_results", "reason": "keyring"}


async def test_a_missing_master_key_holds_messages_until_the_key_unwraps_again(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, app_pool: asyncpg.Pool,
    keyring: Keyring, master_keys: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    stage_settings = merged(settings, pg_settings, batch_rows=16, retry_max_delay=0.3)
    ws, _ = await workspace()
    before = transcript(ws, "written before the rotation")
    await write_records(app_pool, DataKeys(keyring), ws, [to_record(before)])
    # an operator promotes a new master key that the stage (keyring: k1 only) lacks
    early = Keyring.parse(f"{MasterKey.generate('k9').encoded()},{master_keys}")
    await keyadmin.rotate(admin_conn, DataKeys(early), new_data_keys=False)

    with pytest.raises(UnknownMasterKeyError, match="wrapped by master key 'k9', which is not"):
        await session_history(app_pool, keyring, ws, "s1")

    stage = build_stage(stage_settings)
    said = transcript(ws, "kept safe while the keyring is behind")
    async with running(stage, stage_settings), Collector(nc) as seen:
        await publish(nc, said)
        # nak'ed after 0.2 and 0.4 s, then the runtime holds the third (last) delivery
        assert stage.metrics is not None
        registry = stage.metrics.registry
        async with asyncio.timeout(15):
            while registry.get_sample_value("mumu_stage_held_messages", HELD) != 1:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # held: retried, never dead-lettered
        assert not seen.on("mumu.dlq.")
        assert not seen.on("mumu.persisted.")
        assert (registry.get_sample_value(
            "mumu_persist_failed_batches_total", {"reason": "keyring"}) or 0) >= 3

        # the operator rewraps under a key every process has: the held message is written
        await keyadmin.rotate(admin_conn, DataKeys(early.promoted("k1")), new_data_keys=False)
        await seen.wait_count("mumu.persisted.", 1, timeout=10)
        await drained(nc)
        assert registry.get_sample_value("mumu_stage_held_messages", HELD) == 0
        # the runtime's own dispositions: two naks, one hold, then the ack
        outcome = {o: registry.get_sample_value("mumu_stage_messages_total", {
            "stage": "persist", "route": "mumu_results", "outcome": o}) for o in
            ("nak", "hold", "ack", "term")}
        assert outcome == {"nak": 2.0, "hold": 1.0, "ack": 1.0, "term": 0.0}
    assert not seen.on("mumu.dlq.")
    assert not seen.on("mumu.error.")
    history = await session_history(app_pool, keyring, ws, "s1")
    assert [i.text for i in history] == [before.text, said.text]
    logged = [r for r in caplog.records if "cannot unwrap the data key" in r.getMessage()]
    assert logged
    assert logged[0].levelno == logging.ERROR
    assert "k9" in logged[0].getMessage()
    secret = keyring.encoded().partition(":")[2]
    assert all(secret not in r.getMessage() for r in caplog.records)

