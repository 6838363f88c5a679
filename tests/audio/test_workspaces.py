"""``unknown_workspace``: with a database, ingest accepts only workspaces that exist."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts.events import AudioReady, PipelineError
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from tests.audio.conftest import DATA, publish_audio
from tests.harness import Collector, running
from tests.pg_fixtures import WorkspaceFactory


async def test_audio_for_an_unknown_workspace_is_rejected(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    with_db = settings.model_copy(update={"database_url": pg_settings.database_url})
    known, _ = await workspace("acme")
    stranger = str(uuid.uuid4())
    audio = (DATA / "speech" / "en01.wav").read_bytes()
    async with running(build_ingest(with_db), with_db), Collector(nc) as seen:
        ok = await publish_audio(nc, audio, ws=known)
        again = await publish_audio(nc, audio, ws=known)  # answered from the gate's memory
        unknown = await publish_audio(nc, audio, ws=stranger)
        not_uuid = await publish_audio(nc, audio, ws="no-such-tenant")
        ready = await seen.wait_count("mumu.audio.ready.", 2, timeout=30)
        errors = await seen.wait_count("mumu.error.", 2, timeout=30)
        letters = await seen.wait_count("mumu.dlq.", 2, timeout=30)
    assert {AudioReady.model_validate_json(m.data).request_id for m in ready} == {ok, again}
    assert all(m.subject == f"mumu.audio.ready.{known}" for m in ready)
    by_id = {e.request_id: e for e in (PipelineError.model_validate_json(m.data) for m in errors)}
    assert {by_id[unknown].code, by_id[not_uuid].code} == {"unknown_workspace"}
    assert {m.subject for m in errors} == {f"mumu.error.{stranger}", "mumu.error.no-such-tenant"}
    assert {m.headers[h.DLQ_CODE] for m in letters} == {"unknown_workspace"}


async def test_without_a_database_every_workspace_is_accepted(
    nc: NATS, streams: None, settings: Settings
) -> None:
    assert settings.database_url is None
    async with running(build_ingest(settings), settings), Collector(nc) as seen:
        rid = await publish_audio(nc, (DATA / "speech" / "en01.wav").read_bytes(), ws="anyone")
        ready = await seen.wait_count("mumu.audio.ready.", 1, timeout=30)
    assert AudioReady.model_validate_json(ready[0].data).request_id == rid
