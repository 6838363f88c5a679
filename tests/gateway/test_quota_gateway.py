"""Workspace quotas as gateway clients meet them (real nats-server, PostgreSQL, gateway,
ingest and reason stages): 429 ``quota_exceeded`` with ``Retry-After``, overrides stored
in PostgreSQL, the in-flight count freed when requests end, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.embedded import EmbeddedNats
from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from tests.conftest import nats_env
from tests.gateway.conftest import receive_until, serving
from tests.gateway.quota_kit import FastBackend, enforcing, http_ask, quota_settings
from tests.pg_fixtures import WorkspaceFactory


async def test_asks_past_the_per_minute_quota_get_429_with_retry_after_per_workspace(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws_a, _ = await workspace("a")
    ws_b, _ = await workspace("b")
    await set_limit_overrides(admin_conn, ws_a, {"asks_per_minute": 3})
    async with serving(cfg) as gw:
        a = [await http_ask(http, gw.url, await gw.key_token(ws_a), f"a{i}") for i in range(5)]
        b = [await http_ask(http, gw.url, await gw.key_token(ws_b), f"b{i}") for i in range(5)]
    assert [status for status, _, _ in a] == [202, 202, 202, 429, 429]
    for _, body, headers in a[3:]:
        assert body["error"]["code"] == "quota_exceeded"
        assert "3 per minute" in body["error"]["message"]
        # one token back at 3 per minute: about 20 s
        assert 15 <= int(headers["Retry-After"]) <= 20
    assert [status for status, _, _ in b] == [202] * 5  # B has its own (default) quota


async def test_requests_in_flight_are_capped_and_freed_when_their_answer_ends_them(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws_a, _ = await workspace("a")
    await set_limit_overrides(admin_conn, ws_a, {"concurrent_requests": 2})
    hold = asyncio.Event()
    backend = FastBackend(concurrency=4, hold=hold)
    async with serving(cfg) as gw, enforcing(cfg, backend):
        token = await gw.key_token(ws_a)
        first = [await http_ask(http, gw.url, token, f"q{i}") for i in range(2)]
        assert [status for status, _, _ in first] == [202, 202]
        status, body, headers = await http_ask(http, gw.url, token, "one too many")
        assert status == 429
        assert body["error"]["code"] == "quota_exceeded"
        assert "2 requests of this workspace are in flight" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
        hold.set()  # the two answers end their requests; ingest frees their slots
        accepted: list[int] = []
        async with asyncio.timeout(15):
            while len(accepted) < 2:
                status, _, _ = await http_ask(http, gw.url, token, "after the answers")
                if status == 202:
                    accepted.append(status)
                else:
                    assert status == 429
                    await asyncio.sleep(0.1)


def mumu(env: dict[str, str], *args: str) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    done = subprocess.run([sys.executable, "-m", "mumu", "workspace", *args, "--json"],
                          env=clean | env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_cli_overrides_a_limit_in_postgres_and_the_gateway_enforces_it_and_usage_shows_it(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, http: aiohttp.ClientSession, nats_server: EmbeddedNats,
) -> None:
    cfg = quota_settings(settings, pg_settings, asks_per_minute=6)
    ws, _ = await workspace("a")
    assert pg_settings.database_admin_url is not None
    env = {"MUMU_DATABASE_ADMIN_URL": pg_settings.database_admin_url.get_secret_value(),
           "MUMU_QUOTA__ASKS_PER_MINUTE": "6", **nats_env(nats_server)}
    shown = await asyncio.to_thread(mumu, env, "limits", ws)
    assert shown["limits"]["concurrent_requests"] == {
        "value": 100, "default": 100, "overridden": False}
    assert shown["limits"]["asks_per_minute"]["value"] == 6  # the settings' default
    set_zero = await asyncio.to_thread(
        mumu, env, "limits", ws, "--set", "concurrent_requests=0", "--set", "longest_audio=30")
    assert set_zero["limits"]["concurrent_requests"] == {
        "value": 0, "default": 100, "overridden": True}
    assert set_zero["limits"]["longest_audio"]["overridden"] is True
    async with serving(cfg) as gw:
        token = await gw.key_token(ws)
        status, body, _ = await http_ask(http, gw.url, token, "refused")
        assert (status, body["error"]["code"]) == (429, "quota_exceeded")
        back = await asyncio.to_thread(
            mumu, env, "limits", ws, "--set", "concurrent_requests=default")
        assert back["limits"]["concurrent_requests"]["overridden"] is False
        status, _, _ = await http_ask(http, gw.url, token, "accepted")
        assert status == 202
    usage = (await asyncio.to_thread(mumu, env, "usage", ws))["usage"]
    # no stage runs: the accepted ask is still in flight; its token is 1 of 6 per minute
    assert usage["concurrent_requests"]["used"] == 1
    assert usage["concurrent_requests"]["remaining"] == 99
    assert 0.5 < usage["asks_per_minute"]["used"] <= 1
    assert usage["asks_per_minute"]["limit"] == 6
    assert usage["longest_audio"] == {
        "limit": 30, "used": 0, "remaining": 30, "overridden": True}
    assert usage["audio_seconds_per_day"]["used"] == 0


async def test_websocket_asks_past_the_quota_get_a_quota_exceeded_error_and_the_socket_stays(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws, _ = await workspace("a")
    await set_limit_overrides(admin_conn, ws, {"asks_per_minute": 1})
    async with serving(cfg) as gw, http.ws_connect(gw.ws_url(await gw.key_token(ws))) as sock:
        await receive_until(sock, lambda m: m["type"] == "ready")
        await sock.send_json({"type": "ask", "text": "first"})
        (accepted,) = [m for m in await receive_until(sock, lambda m: m["type"] == "accepted")
                       if m["type"] == "accepted"]
        await sock.send_json({"type": "ask", "text": "second"})
        error = (await receive_until(sock, lambda m: m["type"] == "error"))[-1]
        assert error["code"] == "quota_exceeded"
        assert "1 per minute" in error["message"]
        await sock.send_json({"type": "ping"})  # the socket still serves
        await receive_until(sock, lambda m: m["type"] == "pong")
    assert accepted["request_id"]


async def test_a_duplicate_ask_of_an_ended_request_holds_no_in_flight_slot(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws, _ = await workspace("a")
    await set_limit_overrides(admin_conn, ws, {"concurrent_requests": 1})
    async with serving(cfg) as gw, enforcing(cfg, FastBackend()):
        token = await gw.key_token(ws)

        async def ask(rid: str, wait: bool) -> tuple[int, dict[str, Any]]:
            params = {"request_id": rid, **({"wait": "true"} if wait else {})}
            async with http.post(f"{gw.url}/api/ask", params=params,
                                 headers={"Authorization": f"Bearer {token}"},
                                 json={"text": "same question"}) as resp:
                return resp.status, await resp.json()

        async def answered_once_the_slot_is_free() -> None:
            # the ends watcher frees a slot a moment after the answer that ended it
            async with asyncio.timeout(10):
                while (await ask(f"probe-{time.monotonic_ns()}", wait=True))[0] != 200:
                    await asyncio.sleep(0.1)

        assert (await ask("first-1", wait=True))[0] == 200
        await answered_once_the_slot_is_free()
        status, body = await ask("first-1", wait=False)  # the client retries the same id
        assert (status, body["duplicate"]) == (202, True)
        # the duplicate started nothing, so it holds nothing: the one slot frees again
        await answered_once_the_slot_is_free()
