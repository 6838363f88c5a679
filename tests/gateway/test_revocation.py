"""Session tokens die with their API key: revoked (`mumu workspace api-key revoke`) or its
workspace deleted, every gateway replica refuses them within seconds, and open
websockets of that key are closed. Real PostgreSQL, real NATS, two gateway instances."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.cli.main import main
from mumu.settings import Settings
from tests.gateway.conftest import gateway_settings, receive_until, serving
from tests.gateway.test_tenancy import auth, session
from tests.pg_fixtures import WorkspaceFactory

WITHIN = 5.0
"""The promise: a dead key's tokens are refused within this many seconds."""


def two_replicas(settings: Settings, pg_settings: Settings) -> Settings:
    return gateway_settings(settings).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })


async def ask_status(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.post(f"{url}/api/ask", json={"text": "still there?"},
                         headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def history_status(http: aiohttp.ClientSession, url: str, sid: str, token: str
                         ) -> tuple[int, Any]:
    async with http.get(f"{url}/api/sessions/{sid}/history", headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def refused_after(probe: Callable[[], Awaitable[tuple[int, Any]]], since: float
                        ) -> tuple[float, Any]:
    """Seconds from ``since`` until ``probe`` answers 401 (polled every 50 ms), and that
    answer's body; fails after twice the promise."""
    while True:
        status, body = await probe()
        if status == 401:
            return time.monotonic() - since, body
        assert status in (200, 202), body
        assert time.monotonic() - since < 2 * WITHIN, "the dead key's token still works"
        await asyncio.sleep(0.05)


async def closed_after(sock: aiohttp.ClientWebSocketResponse, since: float
                       ) -> tuple[float, list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = []
    while True:
        msg = await sock.receive(timeout=2 * WITHIN)
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
            continue
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        return time.monotonic() - since, frames


async def test_a_revoked_api_key_s_tokens_are_refused_by_every_replica_within_5_s(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings, pg_admin_url: str,
    workspace: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = two_replicas(settings, pg_settings)
    ws, key = await workspace("revoked")
    monkeypatch.setenv("MUMU_DATABASE_ADMIN_URL", pg_admin_url)
    assert await asyncio.to_thread(main, ["workspace", "api-key", "create", ws]) == 0
    other_key = capsys.readouterr().out.split("api key: ")[1].split()[0]
    async with serving(cfg) as one, serving(cfg) as two, aiohttp.ClientSession() as http:
        created = await session(http, one.url, key)  # issued by one replica...
        token, sid = created["token"], created["session_id"]
        kept = (await session(http, two.url, other_key))["token"]
        assert (await ask_status(http, two.url, token))[0] == 202  # ...served by the other
        assert (await history_status(http, one.url, sid, token))[0] == 200
        sock = await http.ws_connect(two.ws_url(token))
        await receive_until(sock, lambda m: m["type"] == "ready")

        assert await asyncio.to_thread(main, ["workspace", "api-key", "ls", ws, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [k["revoked_at"] for k in listed] == [None, None]
        prefix = key[:11]
        assert [k["prefix"] for k in listed].count(prefix) == 1
        assert await asyncio.to_thread(
            main, ["workspace", "api-key", "revoke", ws, prefix, "--json"]) == 0
        revoked_at = time.monotonic()
        assert json.loads(capsys.readouterr().out)["revoked"] == [
            k["key_id"] for k in listed if k["prefix"] == prefix]

        (on_two, body), (on_one, _), (socket_closed, frames) = await asyncio.gather(
            refused_after(lambda: ask_status(http, two.url, token), revoked_at),
            refused_after(lambda: history_status(http, one.url, sid, token), revoked_at),
            closed_after(sock, revoked_at),
        )
        with capsys.disabled():
            print(f"\nrevoked: refused after {on_two:.2f} s (ask, replica two), {on_one:.2f} s "
                  f"(history, replica one); socket closed after {socket_closed:.2f} s")
        assert max(on_one, on_two, socket_closed) < WITHIN
        assert body["error"]["code"] == "token_revoked"
        assert sock.close_code == 4401
        assert [f["code"] for f in frames if f["type"] == "error"] == ["token_revoked"]
        # the revoked key gets no new token, a reconnect is refused; the workspace's other
        # key and its tokens work on
        async with http.post(f"{one.url}/api/session", headers=auth(key)) as resp:
            assert resp.status == 401
        async with http.get(two.ws_url(token)) as resp:
            assert resp.status == 401
        async with http.ws_connect(one.ws_url()) as late:  # the token as first message
            await late.send_json({"type": "auth", "token": token})
            refused = await receive_until(late, lambda m: m["type"] == "error")
            assert refused[-1]["code"] == "token_revoked"
            assert (await late.receive()).type in (aiohttp.WSMsgType.CLOSE,
                                                   aiohttp.WSMsgType.CLOSED)
            assert late.close_code == 4401
        assert (await ask_status(http, one.url, kept))[0] == 202
        assert (await ask_status(http, two.url, kept))[0] == 202
        # revoking it again finds nothing live
        assert await asyncio.to_thread(main, ["workspace", "api-key", "revoke", ws, prefix]) == 1
        assert "no live API key" in capsys.readouterr().out


async def test_deleting_the_workspace_kills_its_tokens_within_5_s(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    admin_conn: asyncpg.Connection, workspace: WorkspaceFactory,
) -> None:
    cfg = two_replicas(settings, pg_settings)
    doomed, doomed_key = await workspace("doomed")
    _, kept_key = await workspace("kept")
    async with serving(cfg) as one, serving(cfg) as two, aiohttp.ClientSession() as http:
        token = (await session(http, one.url, doomed_key))["token"]
        kept = (await session(http, one.url, kept_key))["token"]
        assert (await ask_status(http, two.url, token))[0] == 202
        sock = await http.ws_connect(one.ws_url(token))
        await receive_until(sock, lambda m: m["type"] == "ready")

        await admin_conn.execute("DELETE FROM mumu.workspaces WHERE id = $1", doomed)
        deleted_at = time.monotonic()
        (on_two, body), (socket_closed, _) = await asyncio.gather(
            refused_after(lambda: ask_status(http, two.url, token), deleted_at),
            closed_after(sock, deleted_at),
        )
        assert max(on_two, socket_closed) < WITHIN
        assert body["error"]["code"] == "token_revoked"
        assert (await ask_status(http, one.url, token))[0] == 401
        assert (await ask_status(http, two.url, kept))[0] == 202


async def test_a_token_without_an_api_key_id_is_refused_where_keys_are_checked(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    """A token signed with the secret but naming no key (as before this change) could
    never be revoked: a gateway with a database refuses it."""
    cfg = two_replicas(settings, pg_settings)
    ws, _ = await workspace("old-tokens")
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        status, body = await ask_status(http, gw.url, gw.token(ws, "s1"))
        assert status == 401
        assert body["error"]["code"] == "invalid_token"


async def test_session_secret_rotation_keeps_tokens_of_the_previous_secret_only(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    """Rotation in two steps, as replicas roll: tokens signed with the old secret work while
    it is the previous one, and stop when it leaves."""
    old, new, newer = (SecretStr(f"session-secret-{n}-0123456789abcdef") for n in range(3))

    def rolled(current: SecretStr, previous: SecretStr | None) -> Settings:
        cfg = two_replicas(settings, pg_settings)
        return cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={
            "session_secret": current, "session_secret_previous": previous})})

    ws, key = await workspace("rotating")
    async with aiohttp.ClientSession() as http:
        async with serving(rolled(old, None)) as before:
            signed_old = (await session(http, before.url, key))["token"]
        async with serving(rolled(new, old)) as during:
            assert (await ask_status(http, during.url, signed_old))[0] == 202
            signed_new = (await session(http, during.url, key))["token"]
        async with serving(rolled(new, None)) as only_new:  # the same secret, no previous
            status, body = await ask_status(http, only_new.url, signed_old)
            assert (status, body["error"]["code"]) == (401, "invalid_token")
            assert (await ask_status(http, only_new.url, signed_new))[0] == 202
        async with serving(rolled(newer, new)) as after:
            assert (await ask_status(http, after.url, signed_old))[0] == 401
            assert (await ask_status(http, after.url, signed_new))[0] == 202
            async with http.ws_connect(after.ws_url(signed_new)) as sock:
                await receive_until(sock, lambda m: m["type"] == "ready")
            async with http.get(after.ws_url(signed_old)) as resp:
                assert resp.status == 401
