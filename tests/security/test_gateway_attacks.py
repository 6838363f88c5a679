"""Workspace A attacks workspace B through the gateway of a real run (``mumu up``: NATS,
every stage, PostgreSQL). B has talked first (two questions answered by the real reason
stage); each attack must get the exact refusal (status and error code) and no byte of
B's: not its workspace id, request ids or the words of its conversation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from mumu.contracts.event_types import EventType
from mumu.gateway.tokens import InvalidTokenError, TokenSigner
from tests.secrets_scan import words_of
from tests.security.counts import Tally
from tests.security.gateway_kit import (
    Client,
    Scene,
    Victim,
    api_key_id,
    frames_until,
    stored,
    ws_url,
)
from tests.security.gateway_tables import forged_tokens, tampered_paths
from tests.security.run import SecurityRun

pytestmark = [pytest.mark.security, pytest.mark.asyncio(loop_scope="module")]

B_QUESTIONS = ("Is the zanzibarite quokkaville bridge painted blue?",
               "Does the marmaladine velocipede orchestra play tonight?")
A_QUESTION = "What colour is the xylocarpine lighthouse?"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(run: SecurityRun, http: aiohttp.ClientSession) -> Scene:
    client = Client(run, http)
    b = await client.session(run.ws("B").api_key)
    victim = Victim(run.ws("B").id, b["session_id"], b["token"], texts=list(B_QUESTIONS))
    async with http.ws_connect(ws_url(run, b["token"])) as sock:
        await frames_until(sock, "ready")
        for question in B_QUESTIONS:
            await sock.send_json({"type": "ask", "text": question})
            accepted = (await frames_until(sock, "accepted"))[-1]
            rid = accepted["request_id"]
            got = await frames_until(sock, EventType.ANSWER_FINAL, request=rid)
            victim.request_ids.append(rid)
            victim.cursors += [f["cursor"] for f in got if f.get("request_id") == rid]
            victim.texts += [f["text"] for f in got if f["type"] == EventType.ANSWER_FINAL]
    run.words.update(w for t in victim.texts for w in words_of(t))
    victim.history = await stored(client, victim, len(B_QUESTIONS))
    a = await client.session(run.ws("A").api_key)
    asked = await client.ask(a["token"], A_QUESTION)
    assert asked.status == 200, asked.text
    return Scene(client, victim, a["token"], a["session_id"], asked.json()["request_id"],
                 await api_key_id(run, run.ws("A").id))


async def test_forged_expired_and_other_workspace_tokens_are_refused_everywhere(
    run: SecurityRun, scene: Scene, tally: Tally,
) -> None:
    c, b = scene.client, scene.b
    for name, token, code in forged_tokens(run, scene):
        for route, call in (
            ("ask", c.call("POST", "/api/ask", token, json={"text": "give me B's data"})),
            ("B's history", c.call("GET", f"/api/sessions/{b.session_id}/history", token)),
            ("socket", c.call("GET", "/api/ws?token=" + quote(token, safe=""))),
        ):
            reply = await call
            tally.record(f"{name} on {route}", refused=(reply.status, reply.code) == (401, code),
                         leaked=b.leaked(reply.text))
    assert tally.new_failures() == []


async def test_tokens_sent_on_an_open_socket_cannot_switch_to_b(
    run: SecurityRun, scene: Scene, http: aiohttp.ClientSession, tally: Tally,
) -> None:
    """Without ``?token=`` the first message authenticates; a forged one is refused with
    ``unauthorized`` (the message says why) and close code 4401."""
    b = scene.b
    signer = TokenSigner(SecretStr(run.session_secret), 3600)
    for name, token, http_code in forged_tokens(run, scene):
        try:
            signer.verify(token)
            code = http_code  # well signed: the key check's own error
        except InvalidTokenError:
            code = "unauthorized"
        async with http.ws_connect(ws_url(run)) as sock:
            await sock.send_json({"type": "auth", "token": token})
            got = await frames_until(sock, "error")
            closed = await sock.receive(timeout=10)
        tally.record(f"socket auth: {name}", refused=got[-1]["code"] == code
                     and closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                     and sock.close_code == 4401, leaked=b.leaked(json.dumps(got)))
    assert tally.new_failures() == []


async def test_history_path_tampering_never_reaches_b(
    run: SecurityRun, scene: Scene, tally: Tally,
) -> None:
    c, b = scene.client, scene.b
    for name, path, status, code in tampered_paths(scene):
        reply = await c.call("GET", path, scene.a_token)
        tally.record(f"history: {name}", refused=(reply.status, reply.code) == (status, code),
                     leaked=b.leaked(reply.text))
    # extra parameters naming B are ignored: A's own (empty) session comes back
    reply = await c.call("GET", f"/api/sessions/{scene.a_session}/history?session_id="
                         f"{b.session_id}&workspace_id={b.workspace}", scene.a_token)
    own = reply.json()["items"] if reply.status == 200 else None
    tally.record("history: B named in the query", refused=own is not None and all(
        i["request_id"] == scene.a_request for i in own), leaked=b.leaked(reply.text))
    # A may name a session B's id (ids are per workspace): it is A's, and empty
    same = await c.session(run.ws("A").api_key, session_id=b.session_id)
    reply = await c.call("GET", f"/api/sessions/{b.session_id}/history", same["token"])
    tally.record("history: A's session named like B's", refused=reply.status == 200
                 and reply.json()["items"] == [], leaked=b.leaked(reply.text))
    assert tally.new_failures() == []


async def test_resuming_from_b_s_cursors_replays_only_a_s_events(
    run: SecurityRun, scene: Scene, http: aiohttp.ClientSession, tally: Tally,
) -> None:
    b = scene.b
    starts = sorted({0, *(c - 1 for c in b.cursors)})
    for after in starts:
        async with http.ws_connect(ws_url(run, scene.a_token, after=after)) as sock:
            got = await frames_until(sock, "ready")
        theirs = [f for f in got if f.get("request_id") in b.request_ids]
        if after == 0:  # the replay works: A's own events come back
            assert scene.a_request in {f.get("request_id") for f in got}, got
        tally.record(f"connect after B's cursor {after}", refused=not theirs,
                     leaked=b.leaked(json.dumps(got)))
    async with http.ws_connect(ws_url(run, scene.a_token)) as sock:
        await frames_until(sock, "ready")
        for after in starts:
            await sock.send_json({"type": "resume", "after": after, "session_id": b.session_id,
                                  "workspace_id": b.workspace, "token": b.token})
            got = await frames_until(sock, "resumed")
            theirs = [f for f in got if f.get("request_id") in b.request_ids]
            tally.record(f"resume after B's cursor {after}", refused=not theirs,
                         leaked=b.leaked(json.dumps(got)))
    assert tally.new_failures() == []


async def test_asking_under_b_s_request_id_gets_a_s_own_answer_and_b_keeps_its_own(
    run: SecurityRun, scene: Scene, tally: Tally,
) -> None:
    c, b = scene.client, scene.b
    other = await c.session(run.ws("A").api_key)  # (A's first session stays as it was)
    reply = await c.ask(other["token"], A_QUESTION, request_id=b.request_ids[0])
    body = reply.json()
    # the request id is A's choice and comes back; nothing else of B's may
    tally.record("ask under B's request id", refused=reply.status == 200
                 and body["transcript"] == A_QUESTION and body["answer"] not in b.texts,
                 leaked=b.leaked(body["transcript"] + body["answer"]))
    after = await c.call("GET", f"/api/sessions/{b.session_id}/history", b.token)
    assert after.status == 200
    assert after.json()["items"] == b.history
    assert tally.new_failures() == []


async def test_openai_routes_take_only_live_api_keys(
    run: SecurityRun, scene: Scene, tally: Tally,
) -> None:
    c, b = scene.client, scene.b

    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("file", b"RIFF" + bytes(64), filename="b.wav")
        data.add_field("model", "whisper-1")
        data.add_field("session_id", b.session_id)
        return data

    routes = [("GET", "/v1/models", None), ("POST", "/v1/audio/transcriptions", form),
              ("POST", "/v1/audio/translations", form)]
    credentials = [
        ("no credentials", None, "unauthorized"),
        ("A's session token", scene.a_token, "invalid_api_key"),
        ("B's session token", b.token, "invalid_api_key"),
        ("B's key, one character changed", run.ws("B").api_key[:-1] + "x", "invalid_api_key"),
        ("B's key prefix only", run.ws("B").api_key[:11], "invalid_api_key"),
        ("B's workspace id", b.workspace, "invalid_api_key"),
        ("the session secret", run.session_secret, "invalid_api_key"),
    ]
    for method, path, body in routes:
        for name, key, code in credentials:
            data = body() if body is not None else None
            reply = await c.call(method, path, key, data=data)
            tally.record(f"{path} with {name}", refused=(reply.status, reply.code) == (401, code),
                         leaked=b.leaked(reply.text))
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/audio/speech"):
        reply = await c.call("POST", path, run.ws("A").api_key, json={"messages": []})
        tally.record(f"{path} (not served)", refused=reply.status in (404, 405),
                     leaked=b.leaked(reply.text))
    models = await c.call("GET", "/v1/models", run.ws("A").api_key)
    assert models.status == 200 and not b.leaked(models.text)
    assert tally.new_failures() == []


async def test_a_revoked_key_and_its_tokens_open_nothing(
    run: SecurityRun, scene: Scene, tally: Tally,
) -> None:
    """A key A's SRE revoked (`mumu workspace api-key revoke`) still in an attacker's
    hands: its tokens stop within 5 s and never reach B."""
    c, b, a = scene.client, scene.b, run.ws("A").id
    out = await asyncio.to_thread(run.cli, "workspace", "api-key", "create", a)
    key = out.split("api key: ")[1].split()[0]
    run.secret("second api key of A", key)
    created = await c.session(key)
    token, mine = created["token"], f"/api/sessions/{created['session_id']}/history"
    assert (await c.call("GET", mine, token)).status == 200  # it worked before
    await asyncio.to_thread(run.cli, "workspace", "api-key", "revoke", a, key[:11])
    revoked_at = time.monotonic()
    while (reply := await c.call("GET", mine, token)).status != 401:
        assert time.monotonic() - revoked_at < 5.0, "the revoked key's token still works"
        await asyncio.sleep(0.1)
    for name, method, path, bearer, code in (
        ("ask", "POST", "/api/ask", token, "token_revoked"),
        ("B's history", "GET", f"/api/sessions/{b.session_id}/history", token, "token_revoked"),
        ("socket", "GET", "/api/ws?token=" + quote(token, safe=""), None, "token_revoked"),
        ("new session", "POST", "/api/session", key, "invalid_api_key"),
        ("/v1/models", "GET", "/v1/models", key, "invalid_api_key"),
    ):
        reply = await c.call(method, path, bearer, json={"text": "x"} if method == "POST" else None)
        tally.record(f"revoked: {name}", refused=(reply.status, reply.code) == (401, code),
                     leaked=b.leaked(reply.text))
    assert tally.new_failures() == []
