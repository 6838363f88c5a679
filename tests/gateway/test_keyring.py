"""History under keys gone wrong: a keyring without the workspace's master key is 503, a
shredded workspace is 410."""

from __future__ import annotations

import logging

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.crypto.keyring import MasterKey
from mumu.db import keyadmin
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.conftest import Results, gateway_settings, rid, serving
from tests.gateway.test_tenancy import auth, history, session
from tests.harness import running
from tests.pg_fixtures import WorkspaceFactory


async def test_history_under_an_out_of_date_keyring_is_503_and_names_the_key_only_in_the_log(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, results: Results, caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = gateway_settings(settings).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    ws, key = await workspace("a")
    async with serving(cfg) as gw, aiohttp.ClientSession() as http, running(
        build_persist(cfg), cfg
    ):
        a = await session(http, gw.url, key)
        await results.transcript(ws, a["session_id"], rid(), "stored under k1")
        assert len(await history(http, gw.url, a["session_id"], a["token"], rows=1)) == 1

    # a gateway started with only a newer master key (a promotion it was not restarted for)
    stale = cfg.model_copy(update={"master_keys": SecretStr(MasterKey.generate("k2").encoded())})
    async with serving(stale) as gw, aiohttp.ClientSession() as http:
        with caplog.at_level(logging.ERROR, logger="mumu"):
            async with http.get(f"{gw.url}/api/sessions/{a['session_id']}/history",
                                headers=auth(a["token"])) as resp:
                body = await resp.json()
                assert resp.status == 503, body
                assert resp.headers["Retry-After"] == "30"
        assert body["error"]["code"] == "unavailable"
        assert "k1" not in body["error"]["message"]
        assert any(r.exc_info and "'k1'" in str(r.exc_info[1]) for r in caplog.records)


async def test_history_after_the_workspace_is_shredded_is_410(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, results: Results,
) -> None:
    cfg = gateway_settings(settings).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    ws, key = await workspace("shredded")
    async with serving(cfg) as gw, aiohttp.ClientSession() as http, running(
        build_persist(cfg), cfg
    ):
        a = await session(http, gw.url, key)
        await results.transcript(ws, a["session_id"], rid(), "crypto-erased soon")
        # read once: the gateway holds the workspace's data key in memory from here on
        assert len(await history(http, gw.url, a["session_id"], a["token"], rows=1)) == 1
        report = await keyadmin.shred(admin_conn, ws)
        assert report.transcripts == 1
        async with http.get(f"{gw.url}/api/sessions/{a['session_id']}/history",
                            headers=auth(a["token"])) as resp:
            body = await resp.json()
    assert resp.status == 410, body
    assert body == {"error": {"code": "shredded",
                              "message": "this workspace's data was crypto-erased",
                              "request_id": resp.headers["X-Request-Id"]}}
