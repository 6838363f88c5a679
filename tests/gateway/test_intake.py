"""The gateway and per-workspace intake: a workspace without an intake stream gets one on
its first ask, a repeated client request id answers with the existing request, and
another workspace's forged Nats-Msg-Id cannot suppress an ask (real server, real reason
stage with a test backend)."""

from __future__ import annotations

from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from mumu.broker.credentials import AuthDir
from mumu.broker.jsapi import stream_config
from mumu.broker.roles import Role
from mumu.broker.workspaces import remove_workspace
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TextAsk, derive_id
from mumu.settings import Settings
from mumu.stages.reason.stage import ReasonStage
from tests.gateway.conftest import WS_A, WS_B, Gateway, Results, rid, serving
from tests.harness import running
from tests.reason.echo_backend import EchoBackend


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ask(http: aiohttp.ClientSession, gw: Gateway, token: str, text: str,
              **query: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{gw.url}/api/ask", json={"text": text}, params=query,
                         headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def intake_messages(nc: NATS, ws: str) -> int:
    info = await nc.jetstream().stream_info(subjects.intake_stream(ws))
    return int(info.state.messages)


def managing(settings: Settings, users: AuthDir) -> Settings:
    """A gateway whose NATS user may manage streams (the operator's seed). The `gateway`
    role of `mumu up` may not: there, `mumu up`, `mumu workspace create` and `mumu streams
    apply` provision workspaces, and the gateway's attempt ends in a clear 503."""
    nats = settings.nats.model_copy(update={"credentials": users.seed_file(Role.OPERATOR)})
    return settings.model_copy(update={"nats": nats})


NEW_WS = "33333333-3333-4333-8333-333333333333"


async def test_the_first_ask_of_a_workspace_without_intake_creates_it(
    nc: NATS, streams: None, gw_settings: Settings, broker_users: AuthDir,
    http: aiohttp.ClientSession,
) -> None:
    # a workspace made before intake streams existed: a valid token, no stream yet
    assert await stream_config(nc, subjects.intake_stream(NEW_WS)) is None
    async with serving(managing(gw_settings, broker_users)) as gw:
        status, body = await ask(http, gw, gw.token(NEW_WS), "Hello?")
        assert status == 202, body
        assert await intake_messages(nc, NEW_WS) == 1
        ingest = await stream_config(nc, subjects.STREAM_INGEST)
        assert ingest is not None
        assert subjects.intake_stream(NEW_WS) in {s["name"] for s in ingest["sources"]}
        assert await stream_config(nc, f"OBJ_{subjects.upload_bucket(NEW_WS)}") is not None
        # removed since (the gateway remembers it had one): recreated on "no stream"
        await remove_workspace(nc, NEW_WS)
        status, body = await ask(http, gw, gw.token(NEW_WS), "two")
        assert status == 202, body
        assert await intake_messages(nc, NEW_WS) == 1


async def test_the_gateway_role_cannot_create_streams_and_says_so(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS
) -> None:
    status, body = await ask(http, gateway, gateway.token(NEW_WS), "Hello?")
    assert status == 503, body
    assert body["error"]["code"] == "unavailable"
    assert await stream_config(nc, subjects.intake_stream(NEW_WS)) is None


async def test_a_repeated_client_request_id_gets_the_existing_request(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, results: Results
) -> None:
    token = gateway.token(WS_A, "s1")
    mine = rid()
    status, first = await ask(http, gateway, token, "What is 2+2?", request_id=mine)
    assert (status, first) == (202, {"request_id": mine, "session_id": "s1", "duplicate": False})
    status, again = await ask(http, gateway, token, "What is 2+2?", request_id=mine)
    assert (status, again) == (202, {"request_id": mine, "session_id": "s1", "duplicate": True})
    assert await intake_messages(nc, WS_A) == 1  # nothing new was queued
    # the stages answered the first one; waiting on the repeat returns that answer
    await results.transcript(WS_A, "s1", mine, "what is two plus two")
    await results.final(WS_A, "s1", mine, "Four.")
    status, result = await ask(http, gateway, token, "What is 2+2?", request_id=mine,
                               wait="true")
    assert status == 200, result
    assert (result["request_id"], result["answer"]) == (mine, "Four.")
    assert result["transcript"] == "what is two plus two"
    # the same id in another workspace is another request
    status, other = await ask(http, gateway, gateway.token(WS_B, "s1"), "Hi", request_id=mine)
    assert (status, other["duplicate"]) == (202, False)


async def test_a_repeat_with_wait_also_gets_results_that_arrive_later(
    gateway: Gateway, http: aiohttp.ClientSession, results: Results
) -> None:
    import asyncio

    token = gateway.token(WS_A, "s1")
    mine = rid()
    assert (await ask(http, gateway, token, "Later?", request_id=mine))[0] == 202
    waiting = asyncio.create_task(ask(http, gateway, gateway.token(WS_A, "s2"), "Later?",
                                      request_id=mine, wait="true"))
    await asyncio.sleep(0.5)  # the repeat is waiting; the original's answer comes now
    await results.final(WS_A, "s1", mine, "Now.")
    status, result = await waiting
    assert status == 200, result
    assert (result["request_id"], result["answer"]) == (mine, "Now.")


async def test_a_forged_msg_id_from_another_workspace_does_not_suppress_an_ask(
    gateway: Gateway, http: aiohttp.ClientSession, nc: NATS, gw_settings: Settings
) -> None:
    wanted = rid()  # the request id B's client will use
    # A, a raw producer on its own subject, sends first with the id B's ask will carry
    forged = derive_id(WS_B, wanted, "gateway", "text")
    decoy = TextAsk(event_id=forged, request_id=wanted, workspace_id=WS_A, session_id="x",
                    text="decoy")
    ack = await nc.jetstream().publish(subjects.INGEST_TEXT.for_workspace(WS_A),
                                       decoy.model_dump_json().encode(),
                                       headers={h.MSG_ID: forged})
    assert not ack.duplicate
    stage = ReasonStage(gw_settings.reason, EchoBackend())
    async with running(stage, gw_settings):
        status, result = await ask(http, gateway, gateway.token(WS_B, "s1"), "Still there?",
                                   request_id=wanted, wait="true")
    assert status == 200, result
    assert result["request_id"] == wanted
    assert result["answer"] == "You asked: Still there?"
