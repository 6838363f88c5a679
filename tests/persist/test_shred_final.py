"""Shred is final (issue 14 point 7), on a real nats-server and a real PostgreSQL.

After ``mumu keys shred A``: a ``mumu dlq replay``, a ``mumu replay`` and an in-flight
message of A store no row and end as ``shredded`` dead letters without their bodies; NATS
holds nothing of A (streams, intake, buckets, KV, dead letters); every persist replica
drops A's cached keys; ``mumu keys reenable A`` is the only way back, with a new key.
Workspace B keeps working throughout.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.broker.embedded import EmbeddedNats
from mumu.broker.jsapi import stream_names
from mumu.cli.main import main
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import PipelineError, new_id
from mumu.db import keyadmin
from mumu.db.records import TranscriptRecord, write_records
from mumu.ops import dlq
from mumu.runtime.deadletter import dead_letter
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage
from tests.conftest import Ensure, nats_env
from tests.harness import Collector, Seen, running
from tests.persist.events import answer, merged, publish, transcript
from tests.pg_fixtures import WorkspaceFactory

Mumu = Callable[..., Awaitable[int]]


@pytest.fixture
def stage_settings(settings: Settings, pg_settings: Settings) -> Settings:
    return merged(settings, pg_settings, batch_rows=16, pool_max=4)


@pytest.fixture
def mumu(
    monkeypatch: pytest.MonkeyPatch, nats_server: EmbeddedNats, pg_admin_url: str,
    pg_app_url: str, master_keys: str, tmp_path: Path,
) -> Mumu:
    """``await mumu("keys", "shred", ...)``: the real CLI (its own event loop, a thread)."""
    for key, value in nats_env(nats_server).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUMU_DATABASE_URL", pg_app_url)
    monkeypatch.setenv("MUMU_DATABASE_ADMIN_URL", pg_admin_url)
    monkeypatch.setenv("MUMU_MASTER_KEYS", master_keys)
    monkeypatch.setenv("MUMU_DATA_DIR", str(tmp_path / "cli"))

    async def run(*argv: str) -> int:
        return await asyncio.to_thread(main, list(argv))

    return run


async def everything_stored(nc: NATS) -> dict[str, list[bytes]]:
    """Every message of every stream (subject, headers and body), per stream."""
    js = nc.jetstream()
    found: dict[str, list[bytes]] = {}
    for stream in await stream_names(nc):
        state = (await js.stream_info(stream)).state
        blobs = found.setdefault(stream, [])
        for seq in range(max(state.first_seq, 1), state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            blobs.append(b"\n".join([(msg.subject or "").encode(),
                                     json.dumps(msg.headers or {}).encode(), msg.data or b""]))
    return found


def holding(stored: dict[str, list[bytes]], needle: str) -> set[str]:
    return {s for s, blobs in stored.items() if any(needle.encode() in b for b in blobs)}


async def seed_nats(nc: NATS, ws: str, secret: str) -> int:
    """Copies of ``ws``'s data wherever NATS keeps some: intake, upload bucket, audio
    bucket, sessions KV, a cancel and a dead letter (of a final never stored); returns
    the dead letter's sequence."""
    js = nc.jetstream()
    await js.publish(subjects.INGEST_TEXT.for_workspace(ws),
                     json.dumps({"text": f"{secret} asked"}).encode())
    uploads = await js.object_store(subjects.upload_bucket(ws))
    await uploads.put(f"{ws}/upload.wav", f"{secret} upload".encode())
    own_audio = await js.object_store(subjects.audio_bucket(ws))  # since storage bounds
    await own_audio.put(f".norm/{ws}/{new_id()}.wav", f"{secret} audio".encode())
    audio = await js.object_store(subjects.BUCKET_AUDIO)  # audio stored before them
    await audio.put(f".norm/{ws}/{new_id()}.wav", f"{secret} audio".encode())
    gone = f".norm/{ws}/{new_id()}.wav"  # transcribed already: only its deleted marker
    await audio.put(gone, f"{secret} transcribed".encode())
    await audio.delete(gone)
    sessions = await js.key_value(subjects.BUCKET_SESSIONS)
    await sessions.put(f"{ws}.seeded", f"{secret} turn".encode())
    await js.publish(subjects.CONTROL_CANCEL.for_workspace(ws), f"{secret} cancel".encode())
    lost = transcript(ws, f"{secret} from the dead letter queue")
    original = Msg(nc, subject=subjects.TRANSCRIPT_FINAL.for_workspace(ws),
                   data=lost.model_dump_json().encode(), headers={h.MSG_ID: lost.event_id})
    letter = dead_letter(original, stage="persist", code="persist_failed", reason="test",
                         stream=subjects.STREAM_RESULTS, sequence=int(uuid.UUID(ws)) % 10**9,
                         deliveries=3, max_payload=nc.max_payload)
    ack = await js.publish(letter.subject, letter.payload,
                           headers={**letter.headers, h.MSG_ID: letter.msg_id})
    return ack.seq


def shredded_letters(seen: Collector, ws: str) -> list[Seen]:
    return [m for m in seen.on(subjects.DLQ.stage("persist").prefix)
            if m.headers.get(h.DLQ_CODE) == "shredded"
            and subjects.last_token(m.headers.get(h.DLQ_SUBJECT, "")) == ws]


def assert_without_body(letters: list[Seen], secret: str) -> None:
    for letter in letters:
        assert letter.data == b""
        assert letter.headers[h.DLQ_BODY_OMITTED] == "true"
        assert not [k for k in letter.headers if k.startswith(h.DLQ_ORIGINAL_PREFIX)]
        assert secret not in json.dumps(letter.headers)


async def rows(admin: asyncpg.Connection, ws: str) -> int:
    count: int = await admin.fetchval(
        "SELECT (SELECT count(*) FROM mumu.transcripts WHERE workspace_id = $1) + "
        "(SELECT count(*) FROM mumu.answers WHERE workspace_id = $1)", ws)
    return count


async def usable_keys(admin: asyncpg.Connection, ws: str) -> list[int]:
    found = await admin.fetch("SELECT version FROM mumu.data_keys WHERE workspace_id = $1 "
                              "AND wrapped IS NOT NULL ORDER BY version", ws)
    return [r["version"] for r in found]


async def test_after_a_shred_replays_and_in_flight_messages_store_nothing_and_nats_forgets(
    nc: NATS, workspaces: Ensure, stage_settings: Settings, workspace: WorkspaceFactory,
    admin_conn: asyncpg.Connection, mumu: Mumu, capsys: pytest.CaptureFixture[str],
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    await workspaces(a, b)
    js = nc.jetstream()
    letter_a = await seed_nats(nc, a, "A-SECRET")
    await seed_nats(nc, b, "B-SECRET")
    stage = build_stage(stage_settings)
    async with running(stage, stage_settings), Collector(nc) as seen:
        stored_a = transcript(a, "A-SECRET stored")
        for event in (stored_a, answer(a, "A-SECRET q", "A-SECRET answer", rid=stored_a.request_id),
                      transcript(b, "B-SECRET stored")):
            await publish(nc, event)
        await seen.wait_count("mumu.persisted.", 3)
        assert (await rows(admin_conn, a), await rows(admin_conn, b)) == (2, 1)

        # the database half of the shred: what races the NATS purge meets it
        await keyadmin.shred(admin_conn, a)
        capsys.readouterr()
        assert await mumu("replay", subjects.TRANSCRIPT_FINAL.for_workspace(a),
                          "--from-seq", "1", "--to-stage", "persist") == 0
        assert "replayed 1 of 1 messages" in capsys.readouterr().out  # A's stored transcript
        assert await mumu("dlq", "replay", str(letter_a)) == 0
        await publish(nc, answer(a, "A-SECRET in flight", "A-SECRET racing"))
        await publish(nc, transcript(b, "B-SECRET meanwhile"))
        await seen.wait_for(lambda _: len(shredded_letters(seen, a)) >= 3)
        await seen.wait_count(subjects.PERSISTED.for_workspace(b), 2)
        letters = shredded_letters(seen, a)
        assert len(letters) == 3  # the replay, the dead letter's replay, the one in flight
        assert_without_body(letters, "A-SECRET")
        errors = [PipelineError.model_validate_json(m.data)  # published after the letter
                  for m in await seen.wait_count(subjects.ERROR.for_workspace(a), 3)]
        assert [e.code for e in errors] == ["shredded"] * 3
        assert (await rows(admin_conn, a), await rows(admin_conn, b)) == (2, 2)
        assert await usable_keys(admin_conn, a) == []  # no new key appeared
        for letter in letters:  # persist erased each late copy from MUMU_RESULTS
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_msg(subjects.STREAM_RESULTS, int(letter.headers[h.DLQ_SEQUENCE]))

        before = await everything_stored(nc)
        b_kept = {subjects.intake_stream(b), subjects.STREAM_INGEST, subjects.STREAM_RESULTS,
                  subjects.STREAM_DLQ, subjects.STREAM_CONTROL, f"KV_{subjects.BUCKET_SESSIONS}",
                  f"OBJ_{subjects.BUCKET_AUDIO}", f"OBJ_{subjects.upload_bucket(b)}",
                  f"OBJ_{subjects.audio_bucket(b)}"}
        assert b_kept <= holding(before, "B-SECRET")
        # A's plaintext is still in intake, buckets, KV...; its results were erased or
        # stored, its letter replayed: the DLQ holds only its shredded letters (no body)
        a_copies = {s.replace(b, a) for s in b_kept}
        assert a_copies - {subjects.STREAM_RESULTS, subjects.STREAM_DLQ} \
            <= holding(before, "A-SECRET")
        assert a_copies <= holding(before, a)
        assert await mumu("keys", "shred", a, "--yes") == 0
        out = capsys.readouterr().out
        assert "shredded 0 data keys" in out  # the database half ran already
        assert "1 audio objects; 3 dead letters" in out  # the shredded ones
        after = await everything_stored(nc)
        assert holding(after, "A-SECRET") == set()
        assert holding(after, a) == set()  # not even a subject, header or object name
        assert b_kept <= holding(after, "B-SECRET")

        # after the purge: nothing left to replay; a late message is dropped the same way
        assert await mumu("replay", subjects.TRANSCRIPT_FINAL.for_workspace(a),
                          "--from-seq", "1", "--to-stage", "persist") == 0
        assert "replayed 0 of 0 messages" in capsys.readouterr().out
        sessions = await js.key_value(subjects.BUCKET_SESSIONS)
        await sessions.put(f"{a}.late", b"A-SECRET turn")  # reason records it, then answers
        await publish(nc, answer(a, "A-SECRET late q", "A-SECRET late", session="late"))
        await seen.wait_for(lambda _: len(shredded_letters(seen, a)) >= 4)
        assert_without_body(shredded_letters(seen, a)[3:], "A-SECRET")
        with pytest.raises(nats.js.errors.KeyNotFoundError):  # persist purged the turn
            await sessions.get(f"{a}.late")
        assert (await sessions.get(f"{b}.seeded")).value == b"B-SECRET turn"
        [its_letter] = [s.seq async for s in dlq.letters(nc, "persist")
                        if subjects.last_token(s.headers[h.DLQ_SUBJECT]) == a]
        assert await mumu("dlq", "replay", str(its_letter)) == 1  # no body to replay
        assert (await rows(admin_conn, a), await usable_keys(admin_conn, a)) == (2, [])
        assert holding(await everything_stored(nc), "A-SECRET") == set()

        # only an operator brings the workspace back, with a new key made then
        assert await mumu("keys", "reenable", a) == 0
        assert "new data key v2" in capsys.readouterr().out
        assert await usable_keys(admin_conn, a) == [2]
        await publish(nc, transcript(a, "A stored again"))
        await publish(nc, transcript(b, "B-SECRET still"))
        await seen.wait_count(subjects.PERSISTED.for_workspace(a), 3)
        await seen.wait_count(subjects.PERSISTED.for_workspace(b), 3)
    assert (await rows(admin_conn, a), await rows(admin_conn, b)) == (3, 3)


async def test_a_shred_drops_the_cached_keys_of_every_running_persist_replica(
    nc: NATS, workspaces: Ensure, stage_settings: Settings, workspace: WorkspaceFactory,
    mumu: Mumu, app_pool: asyncpg.Pool,
) -> None:
    a, _ = await workspace("A")
    b, _ = await workspace("B")
    await workspaces(a, b)
    replicas = [build_stage(stage_settings), build_stage(stage_settings)]
    async with running(replicas[0], stage_settings), running(replicas[1], stage_settings), \
            Collector(nc) as seen:
        for replica in replicas:  # each replica has written rows of both: keys in memory
            for ws in (a, b):
                await write_records(app_pool, replica.data_keys, ws, [said(ws)])
        assert [r.data_keys.cached(ws) for r in replicas for ws in (a, b)] == [1, 1, 1, 1]
        assert await mumu("keys", "shred", a, "--yes") == 0
        # no message of A reaches them: the shred notice alone drops the keys
        async with asyncio.timeout(10):
            while any(r.data_keys.cached(a) for r in replicas):
                await asyncio.sleep(0.05)
        assert [r.data_keys.cached(b) for r in replicas] == [1, 1]
        await publish(nc, transcript(b, "B goes on"))  # and the stage still stores B
        await seen.wait_count(subjects.PERSISTED.for_workspace(b), 1)


def said(ws: str) -> TranscriptRecord:
    event = transcript(ws, "cached")
    return TranscriptRecord(
        event_id=uuid.UUID(event.event_id), request_id=event.request_id,
        session_id=event.session_id, text=event.text, language=event.language,
        duration=event.duration, model=event.model, occurred_at=event.occurred_at,
    )
