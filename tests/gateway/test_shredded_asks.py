"""A shredded workspace takes no new asks (real nats-server, PostgreSQL, gateway, ingest
and reason stages): the gateway answers ``410 workspace_shredded`` and publishes nothing;
a raw NATS producer's asks end as ``workspace_shredded`` dead letters without their bodies
and an error event, before any work; nothing of them is stored. Workspace B is served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import asyncpg
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import new_id
from mumu.db import keyadmin
from mumu.settings import Settings
from tests.conftest import Ensure
from tests.gateway.conftest import serving
from tests.gateway.quota_kit import (
    FastBackend,
    answered,
    auth,
    enforcing,
    error_codes,
    http_ask,
    quota_settings,
    raw_text_ask,
)
from tests.harness import Collector
from tests.ops.replaying import transcript
from tests.pg_fixtures import WorkspaceFactory

SPEECH = Path(__file__).parents[1] / "data" / "speech" / "en01.wav"


async def intake_messages(nc: NATS, ws: str) -> int:
    return int((await nc.jetstream().stream_info(subjects.intake_stream(ws))).state.messages)


async def test_the_gateway_refuses_a_shredded_workspaces_asks_with_410_and_publishes_nothing(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws_a, _ = await workspace("a")
    ws_b, _ = await workspace("b")
    async with serving(cfg) as gw:
        token_a, token_b = await gw.key_token(ws_a), await gw.key_token(ws_b)
        status, _, _ = await http_ask(http, gw.url, token_a, "before the shred")
        assert status == 202
        await keyadmin.shred(admin_conn, ws_a)
        before = await intake_messages(nc, ws_a)

        status, body, _ = await http_ask(http, gw.url, token_a, "after the shred")
        assert status == 410
        assert body["error"]["code"] == "workspace_shredded"
        assert "re-enables" in body["error"]["message"]
        form = aiohttp.FormData()
        form.add_field("audio", SPEECH.read_bytes(), filename="q.wav",
                       content_type="audio/wav")
        async with http.post(f"{gw.url}/api/ask", headers=auth(token_a), data=form) as resp:
            assert resp.status == 410
            assert (await resp.json())["error"]["code"] == "workspace_shredded"
        assert await intake_messages(nc, ws_a) == before  # nothing was published

        status, _, _ = await http_ask(http, gw.url, token_b, "B is served")
        assert status == 202


async def test_raw_nats_asks_of_a_shredded_workspace_are_dead_lettered_unworked_and_unkept(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, workspaces: Ensure,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws_a, _ = await workspace("a")
    ws_b, _ = await workspace("b")
    await workspaces(ws_a, ws_b)
    await keyadmin.shred(admin_conn, ws_a)
    backend = FastBackend()
    secret = f"secret-{new_id()}"
    async with Collector(nc) as seen, enforcing(cfg, backend):
        text_rid = await raw_text_ask(nc, ws_a, f"{secret} asked")
        audio_rid = new_id()
        await nc.jetstream().publish(
            subjects.INGEST_AUDIO.for_workspace(ws_a), SPEECH.read_bytes(),
            headers={h.CONTENT_TYPE: "audio/wav", h.SESSION: "s1", h.REQUEST_ID: audio_rid,
                     h.MSG_ID: f"{ws_a}.{audio_rid}", "X-Secret": secret})
        # a transcript of A (a live stream, or audio in flight during the shred): no answer
        heard = transcript(ws_a, f"{secret} heard")
        await nc.jetstream().publish(
            subjects.TRANSCRIPT_FINAL.for_workspace(ws_a), heard.model_dump_json().encode(),
            headers={h.MSG_ID: heard.event_id})
        b_rid = await raw_text_ask(nc, ws_b, "B is served")
        await seen.wait_for(lambda _: len(error_codes(seen.messages, ws_a)) >= 3
                            and b_rid in answered(seen.messages, ws_b), timeout=20)
        await asyncio.sleep(0.3)  # nothing more may come of A's asks
    assert error_codes(seen.messages, ws_a) == dict.fromkeys(
        (text_rid, audio_rid, heard.request_id), "workspace_shredded")
    letters = seen.on("mumu.dlq.")
    assert sorted(m.subject for m in letters) == sorted([
        subjects.DLQ.stage("ingest").for_workspace(ws_a),
        *[subjects.DLQ.stage("reason").for_workspace(ws_a)] * 2])
    for letter in letters:
        assert letter.headers[h.DLQ_CODE] == "workspace_shredded"
        assert letter.headers[h.DLQ_BODY_OMITTED] == "true" and letter.data == b""
        assert secret not in json.dumps(letter.headers)
    # no work: no model call, no audio decoded or stored, no transcript, no answer
    assert backend.started == 1  # B's ask only
    assert not [m for m in seen.messages if m.subject.endswith(f".{ws_a}") and m.subject
                .startswith(("mumu.audio.", "mumu.transcript.partial.", "mumu.answer."))]
    audio = await nc.jetstream().object_store(subjects.audio_bucket(ws_a))
    with pytest.raises(nats.js.errors.NotFoundError):  # "no objects found"
        await audio.list(ignore_deletes=True)
    sessions = await nc.jetstream().key_value(subjects.BUCKET_SESSIONS)
    with pytest.raises(nats.js.errors.NoKeysError):
        await sessions.keys(filters=[f"{ws_a}.>"])
