"""`mumu workspace create` and `mumu streams apply` give workspaces their intake stream and
upload bucket (real nats-server, real PostgreSQL, the CLI as a user runs it)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.broker.jsapi import stream_config
from mumu.broker.workspaces import own_streams
from mumu.contracts import subjects
from tests.conftest import nats_env
from tests.pg_fixtures import WorkspaceFactory


async def mumu(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", *args, env={**os.environ, **env}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def sources(nc: NATS) -> set[str]:
    live = await stream_config(nc, subjects.STREAM_INGEST)
    assert live is not None
    return {s["name"] for s in live.get("sources") or []}


async def test_workspace_create_makes_its_intake_and_upload_bucket(
    nats_server: EmbeddedNats, nc: NATS, streams: None, pg_admin_url: str, pg_app_url: str,
    master_keys: str, tmp_path: Path,
) -> None:
    env = {**nats_env(nats_server), "MUMU_DATABASE_ADMIN_URL": pg_admin_url,
           "MUMU_DATABASE_URL": pg_app_url, "MUMU_MASTER_KEYS": master_keys}
    code, out, err = await mumu(env, tmp_path, "workspace", "create", "acme")
    assert code == 0, err
    ws = re.search(r"^workspace: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert f"intake: stream MUMU_INTAKE_{ws}, upload bucket mumu-upload-{ws}" in out
    for stream in own_streams(ws):  # intake, upload, audio, once records
        assert await stream_config(nc, stream) is not None, stream
    assert await sources(nc) == {subjects.intake_stream(ws)}
    ack = await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(ws), b"{}")
    assert ack.stream == subjects.intake_stream(ws)
    # without NATS the workspace is still created, and the user is told what is missing
    code, out, err = await mumu({**env, "MUMU_NATS__URL": ""}, tmp_path, "workspace", "create",
                                "offline")
    assert code == 0 and "workspace: " in out
    assert "intake: skipped, MUMU_NATS__URL is not set" in err


async def test_streams_apply_ensures_every_workspace_of_the_database(
    nats_server: EmbeddedNats, nc: NATS, pg_admin_url: str, workspace: WorkspaceFactory,
    tmp_path: Path,
) -> None:
    ws_a, _ = await workspace("a")  # made in the database only, as before intake streams
    ws_b, _ = await workspace("b")
    env = {**nats_env(nats_server), "MUMU_DATABASE_ADMIN_URL": pg_admin_url}
    code, out, err = await mumu(env, tmp_path, "streams", "apply")
    assert code == 0, err
    assert f"MUMU_INTAKE_{ws_a}: created" in out and f"MUMU_INTAKE_{ws_b}: created" in out
    assert await sources(nc) == {subjects.intake_stream(ws_a), subjects.intake_stream(ws_b)}
    code, out, err = await mumu(env, tmp_path, "streams", "apply", "--check")
    assert code == 0, out
    ws_c, _ = await workspace("c")
    code, out, err = await mumu(env, tmp_path, "streams", "apply", "--check")
    assert code == 3 and f"MUMU_INTAKE_{ws_c}: missing" in out
    # no database: the streams are applied, the workspaces said to be skipped
    code, out, err = await mumu({**nats_env(nats_server), "MUMU_DATABASE_ADMIN_URL": ""},
                                tmp_path, "streams", "apply")
    assert code == 0, err
    assert "workspaces: skipped (database not reachable" in out
    assert await sources(nc) == {subjects.intake_stream(ws_a), subjects.intake_stream(ws_b)}
