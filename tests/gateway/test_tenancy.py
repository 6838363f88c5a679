"""Workspace API keys (real PostgreSQL) → session tokens; nothing crosses workspaces."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts.event_types import EventType
from mumu.contracts.events import TextAsk
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from tests.gateway.conftest import Results, gateway_settings, receive_until, rid, serving
from tests.gateway.pipeline import SPEECH
from tests.harness import Collector, Seen, running
from tests.pg_fixtures import WorkspaceFactory


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def session(http: aiohttp.ClientSession, url: str, key: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{url}/api/session", headers=auth(key), json=body or None) as resp:
        assert resp.status == 200, await resp.text()
        created: dict[str, Any] = await resp.json()
        return created


async def history(http: aiohttp.ClientSession, url: str, sid: str, token: str, *, rows: int
                  ) -> list[dict[str, Any]]:
    """The session's history once the persist stage stored ``rows`` rows (or after 10 s)."""
    items: list[dict[str, Any]] = []
    for _ in range(100):
        async with http.get(f"{url}/api/sessions/{sid}/history", headers=auth(token)) as resp:
            assert resp.status == 200
            items = (await resp.json())["items"]
        if len(items) >= rows:
            break
        await asyncio.sleep(0.1)
    return items


async def test_api_keys_sessions_history_and_streams_stay_in_their_workspace(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, results: Results,
) -> None:
    cfg = gateway_settings(settings).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    ws_a, key_a = await workspace("a")
    ws_b, key_b = await workspace("b")
    async with serving(cfg) as gw, aiohttp.ClientSession() as http, running(
        build_persist(cfg), cfg
    ):
        async with http.get(f"{gw.url}/api/ready") as resp:  # only persist runs here
            assert resp.status == 503
            reasons = " ".join((await resp.json())["reasons"])
        for durable in ("ingest-audio", "transcribe-audio", "reason-mumu-results",
                        "reason-mumu-ingest"):
            assert f"consumer {durable} on" in reasons
        assert "persist-mumu-results" not in reasons
        assert "database" not in reasons
        for wrong in ("mumu_wrong", "mumu_\u00e9"):  # a non-ASCII key is unknown, not a 500
            async with http.post(f"{gw.url}/api/session", headers=auth(wrong)) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "invalid_api_key"
        a = await session(http, gw.url, key_a)
        # B asks for A's session id: it gets a session of the same name in *its* workspace
        b = await session(http, gw.url, key_b, session_id=a["session_id"])
        assert b["session_id"] == a["session_id"]
        sid = a["session_id"]

        # asks land on each workspace's own subject
        async with Collector(nc, "mumu.ingest.text.>") as seen:
            for token in (a["token"], b["token"]):
                async with http.post(f"{gw.url}/api/ask", json={"text": "hi"},
                                     headers=auth(token)) as resp:
                    assert resp.status == 202
            await seen.wait_count("mumu.ingest.text.", 2)
        assert sorted(m.subject for m in seen.messages) == sorted(
            [f"mumu.ingest.text.{ws_a}", f"mumu.ingest.text.{ws_b}"])

        # A's conversation, stored encrypted by the persist stage
        async with http.ws_connect(gw.ws_url(b["token"])) as sock_b, http.ws_connect(
            gw.ws_url(a["token"])
        ) as sock_a:
            start_b = (await receive_until(sock_b, lambda m: m["type"] == "ready"))[-1]["cursor"]
            await receive_until(sock_a, lambda m: m["type"] == "ready")
            r = rid()
            await results.transcript(ws_a, sid, r, "what is the capital of France")
            await results.final(ws_a, sid, r, "Paris.")
            got = await receive_until(sock_a, lambda m: m["type"] == EventType.ANSWER_FINAL)
            assert [m["type"] for m in got] == [EventType.TRANSCRIPT_FINAL, EventType.ANSWER_FINAL]
            mine = rid()
            await results.final(ws_b, sid, mine, "B's own answer")
            only = await receive_until(sock_b, lambda m: m["type"] == EventType.ANSWER_FINAL)
            assert [m["request_id"] for m in only] == [mine]
            await sock_b.send_json({"type": "resume", "after": start_b})
            replay = await receive_until(sock_b, lambda m: m["type"] == "resumed")
            assert not [m for m in replay if m.get("request_id") == r]
            # and the other way: A's socket never got B's answer, live or replayed
            await sock_a.send_json({"type": "resume", "after": 0})
            seen_a = await receive_until(sock_a, lambda m: m["type"] == "resumed")
            assert {m["request_id"] for m in seen_a} <= {None, r}

        history_a = await history(http, gw.url, sid, a["token"], rows=2)
        assert [(i["kind"], i["text"]) for i in history_a] == [
            ("transcript", "what is the capital of France"), ("answer", "Paris.")]
        items_b = await history(http, gw.url, sid, b["token"], rows=1)
        assert [i["text"] for i in items_b] == ["B's own answer"]
        other = await session(http, gw.url, key_a)
        async with http.get(f"{gw.url}/api/sessions/{sid}/history",
                            headers=auth(other["token"])) as resp:
            assert resp.status == 403


async def test_waiting_asks_and_transcriptions_only_get_their_own_workspace_results(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, results: Results,
) -> None:
    cfg = gateway_settings(settings, wait_timeout=10.0).model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
    })
    ws_a, key_a = await workspace("a")
    ws_b, key_b = await workspace("b")
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        a = await session(http, gw.url, key_a)
        b = await session(http, gw.url, key_b, session_id=a["session_id"])
        sid = a["session_id"]

        # ?wait=true: B waits; A's answer on the same session id (even under B's request
        # id) must not end B's wait, B's own answer does
        async with Collector(nc, "mumu.ingest.text.>") as asks:
            waiting = asyncio.create_task(_post_json(
                http, f"{gw.url}/api/ask?wait=true", b["token"], {"text": "B asks"}))
            b_rid = TextAsk.model_validate_json(
                (await published(asks, "mumu.ingest.text.", waiting)).data).request_id
        await results.final(ws_a, sid, b_rid, "A's answer", "spoof")
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await results.final(ws_b, sid, b_rid, "B's answer")
        status, body = await waiting
        assert (status, body.get("answer")) == (200, "B's answer"), body

        # /v1/audio/transcriptions with B's key: A's transcript for B's request is not B's
        clip = (SPEECH / "en01.wav").read_bytes()
        async with Collector(nc, "mumu.ingest.audio.>") as uploads:
            form = aiohttp.FormData()
            form.add_field("file", clip, filename="b.wav")
            form.add_field("model", "whisper-1")
            transcribing = asyncio.create_task(_post_form(
                http, f"{gw.url}/v1/audio/transcriptions", key_b, form))
            upload = await published(uploads, "mumu.ingest.audio.", transcribing)
        assert upload.subject == f"mumu.ingest.audio.{ws_b}"
        oai_sid, oai_rid = upload.headers[h.SESSION], upload.headers[h.REQUEST_ID]
        await results.transcript(ws_a, oai_sid, oai_rid, "A's secret transcript", "spoof")
        await asyncio.sleep(0.3)
        assert not transcribing.done()
        await results.transcript(ws_b, oai_sid, oai_rid, "B's own words")
        assert await transcribing == (200, {"text": "B's own words"})


async def published(seen: Collector, prefix: str, request: asyncio.Task[Any]) -> Seen:
    """The request's message on ``prefix``; fails with the response if it ended first."""
    message = asyncio.ensure_future(seen.wait_count(prefix, 1, timeout=30))
    await asyncio.wait({message, request}, return_when=asyncio.FIRST_COMPLETED)
    if not message.done():
        message.cancel()
        raise AssertionError(f"answered before publishing: {request.result()}")
    return message.result()[0]


async def _post_json(http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]
                     ) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body, headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def _post_form(http: aiohttp.ClientSession, url: str, token: str, form: aiohttp.FormData
                     ) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=form, headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def test_failed_api_key_attempts_are_rate_limited_per_client_and_key_prefix(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    cfg = gateway_settings(settings, failed_key_burst=3, failed_key_per_second=0.01)
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, key = await workspace("a")
    stale = "mumu_stale1" + "y" * 38

    async def attempt(client: aiohttp.ClientSession, bearer: str) -> tuple[int, str | None]:
        async with client.post(f"{gw.url}/api/session", headers=auth(bearer)) as resp:
            return resp.status, resp.headers.get("Retry-After")

    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        tries = [await attempt(http, stale) for _ in range(4)]
        assert [status for status, _ in tries] == [401, 401, 401, 429]
        retry_after = tries[-1][1]
        assert retry_after is not None and int(retry_after) >= 1
        # a stale key slows down that key only: the client's good key works
        assert (await attempt(http, key))[0] == 200
        form = aiohttp.FormData()
        form.add_field("file", b"x", filename="a.wav")
        form.add_field("model", "whisper-1")
        async with http.post(f"{gw.url}/v1/audio/transcriptions", data=form,
                             headers=auth(stale)) as resp:
            assert resp.status == 429
        # spraying made-up keys hits the client's ceiling (10x the per-key burst), and
        # then every key of that client waits, the good one too
        sprayed = [(await attempt(http, f"mumu_{n:02d}spray" + "z" * 38))[0] for n in range(40)]
        assert 429 in sprayed
        assert sprayed.count(401) == 3 * 10 - 3  # the stale key's three failures count too
        assert (await attempt(http, key))[0] == 429
        # another client address is not affected
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as elsewhere:
            assert (await attempt(elsewhere, key))[0] == 200
