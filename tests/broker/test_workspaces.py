"""Per-workspace intake streams on a real nats-server: dedupe ids stay inside their
workspace, MUMU_INGEST sources every intake stream, and re-applies keep the sources."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.intake import ingest_replay_subjects
from mumu.broker.jsapi import api, stream_config
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspace, remove_workspace
from mumu.contracts import subjects
from tests.conftest import operator_connection

ROOT = Path(__file__).parents[2]


async def ingest_sources(nc: NATS) -> list[str]:
    live = await stream_config(nc, subjects.STREAM_INGEST)
    assert live is not None
    return sorted(s["name"] for s in live.get("sources") or [])


async def ingest_messages(nc: NATS, want: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
    """MUMU_INGEST's messages once it holds ``want`` (sourcing is asynchronous)."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while (await js.stream_info(subjects.STREAM_INGEST)).state.messages < want:
            await asyncio.sleep(0.02)
    state = (await js.stream_info(subjects.STREAM_INGEST)).state
    out = []
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(subjects.STREAM_INGEST, seq)
        out.append((msg.subject, msg.data or b""))
    return out


async def test_ensure_creates_the_intake_stream_bucket_and_source_once(
    nc: NATS, streams: None
) -> None:
    first = await ensure_workspace(nc, "ws-a", intake_max_bytes=1 << 20)
    assert [(c.name, c.action) for c in first] == [
        ("MUMU_INTAKE_ws-a", "created"), ("OBJ_mumu-upload-ws-a", "created"),
        ("OBJ_mumu-audio-ws-a", "created"), ("KV_mumu-once-ws-a", "created")]
    intake = await stream_config(nc, subjects.intake_stream("ws-a"))
    assert intake is not None
    assert intake["subjects"] == ["mumu.ingest.audio.ws-a", "mumu.ingest.text.ws-a",
                                  "mumu.ingest.live.ws-a", "mumu.ingest.chunk.*.ws-a"]
    assert intake["max_bytes"] == 1 << 20
    assert intake["duplicate_window"] == 600_000_000_000
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-a"]
    again = await ensure_workspace(nc, "ws-a", intake_max_bytes=1 << 20)
    assert {c.action for c in again} == {"unchanged"}
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-a"]


async def test_a_forged_msg_id_cannot_suppress_another_workspaces_message(
    nc: NATS, workspaces
) -> None:
    await workspaces("ws-a", "ws-b")
    js = nc.jetstream()
    forged = "ws-b.req-1.gateway.text"  # the id B's next message will carry
    a = await js.publish(subjects.INGEST_TEXT.for_workspace("ws-a"), b"A", headers={"Nats-Msg-Id": forged})
    b = await js.publish(subjects.INGEST_TEXT.for_workspace("ws-b"), b"B", headers={"Nats-Msg-Id": forged})
    assert (a.stream, a.duplicate) == ("MUMU_INTAKE_ws-a", None)
    assert (b.stream, b.duplicate) == ("MUMU_INTAKE_ws-b", None)
    # both reach the stages' stream: MUMU_INGEST does not dedupe sourced messages again
    assert sorted(await ingest_messages(nc, 2)) == [
        ("mumu.ingest.text.ws-a", b"A"), ("mumu.ingest.text.ws-b", b"B")]


async def test_a_repeated_msg_id_in_one_workspace_is_still_a_duplicate(
    nc: NATS, workspaces
) -> None:
    await workspaces("ws-a")
    js = nc.jetstream()
    subject = subjects.INGEST_TEXT.for_workspace("ws-a")
    first = await js.publish(subject, b"1", headers={"Nats-Msg-Id": "same"})
    second = await js.publish(subject, b"2", headers={"Nats-Msg-Id": "same"})
    assert not first.duplicate
    assert second.duplicate is True and second.seq == first.seq
    assert await ingest_messages(nc, 1) == [(subject, b"1")]
    await asyncio.sleep(0.3)
    assert (await js.stream_info(subjects.STREAM_INGEST)).state.messages == 1


async def test_an_unknown_workspace_has_no_stream_to_publish_into(nc: NATS, workspaces) -> None:
    await workspaces("ws-a")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace("ws-nobody"), b"x")


async def test_reapplying_the_stream_files_keeps_every_source(nc: NATS, workspaces) -> None:
    await workspaces("ws-a", "ws-b")
    again = await apply_all(nc)
    assert {c.name: c.action for c in again}["MUMU_INGEST"] == "unchanged"
    assert {c.action for c in await apply_all(nc, dry_run=True)} == {"unchanged"}
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-a", "MUMU_INTAKE_ws-b"]
    # even when the live sources were lost, a re-apply puts back every intake stream
    live = await stream_config(nc, subjects.STREAM_INGEST)
    assert live is not None
    await api(nc, "STREAM.UPDATE.MUMU_INGEST", {**live, "sources": [live["sources"][0]]})
    assert [c.action for c in await apply_all(nc) if c.name == "MUMU_INGEST"] == ["updated"]
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-a", "MUMU_INTAKE_ws-b"]
    js = nc.jetstream()
    await js.publish(subjects.INGEST_TEXT.for_workspace("ws-b"), b"B")
    assert await ingest_messages(nc, 1) == [("mumu.ingest.text.ws-b", b"B")]


async def test_concurrent_ensures_from_several_processes_lose_no_source(
    nats_server: EmbeddedNats, nc: NATS, streams: None, broker_users: AuthDir
) -> None:
    clients = [await operator_connection(nats_server.url, broker_users) for _ in range(4)]
    try:
        names = [f"ws-{i}" for i in range(12)]
        await asyncio.gather(*(ensure_workspace(clients[i % 4], ws) for i, ws in enumerate(names)))
    finally:
        for client in clients:
            await client.close()
    assert await ingest_sources(nc) == sorted(subjects.intake_stream(ws) for ws in names)


async def test_a_pre_intake_ingest_stream_is_migrated(nc: NATS) -> None:
    # MUMU_INGEST as it was: capturing mumu.ingest.*.* itself
    legacy = json.loads((ROOT / "streams" / "mumu_ingest.json").read_text())
    legacy |= {"subjects": ["mumu.ingest.audio.*", "mumu.ingest.text.*"],
               "duplicate_window": 120_000_000_000}
    del legacy["sources"]
    await api(nc, "STREAM.CREATE.MUMU_INGEST", legacy)
    changes = {c.name: c for c in await apply_all(nc)}
    assert changes["MUMU_INGEST"].action == "updated"
    await ensure_workspace(nc, "ws-a")
    live = await stream_config(nc, subjects.STREAM_INGEST)
    # the ingest subjects moved to the intake stream; only the replay subjects stay
    assert live is not None and live.get("subjects") == ingest_replay_subjects()
    assert live.get("duplicate_window", 0) == 0
    ack = await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace("ws-a"), b"A")
    assert ack.stream == "MUMU_INTAKE_ws-a"


async def test_remove_workspace_drops_its_stream_bucket_and_source(nc: NATS, workspaces) -> None:
    await workspaces("ws-a", "ws-b")
    await remove_workspace(nc, "ws-a")
    assert await stream_config(nc, subjects.intake_stream("ws-a")) is None
    assert await stream_config(nc, f"OBJ_{subjects.upload_bucket('ws-a')}") is None
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-b"]
    await remove_workspace(nc, "ws-a")  # again: nothing left to remove
    assert await ingest_sources(nc) == ["MUMU_INTAKE_ws-b"]
