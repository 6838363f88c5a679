"""A Hypothesis-driven websocket client against the real gateway (real nats-server, real
reason stage): any conversation (``ws_strategies``) gets answers, never a crash or a
silent hang: every frame the server sends is a JSON object with a ``type`` and a
``cursor`` (an ``error`` with a code and a message), a socket the server closes closes
with a documented code, one it leaves open answers a ``ping``, every frame no protocol
version accepts gets its error, an HTTP refusal of the upgrade is a 4xx, and nothing of
another client reaches it. A well-behaved client of another workspace completes an ask
over its own socket after every conversation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from mumu.stages.reason.settings import ReasonSettings
from mumu.stages.reason.stage import build_stage as build_reason
from tests.conftest import Ensure
from tests.fuzz.deadletters import run_examples
from tests.fuzz.ws_strategies import Conversation, Frame, certainly_bad, conversations, fill
from tests.gateway.conftest import WS_A, WS_B, Gateway, gateway_settings, serving
from tests.harness import running

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = 15
MAX_FRAME = 64 * 1024
AUTH_TIMEOUT = 1.0
CLOSE_CODES = {1000, 1001, 1009, 1013, 4401, 4429}
"""docs/gateway.md: normal, going away, frame too big, try again (resume), unauthorized,
too many sockets."""


EVERY_END = [
    Conversation("message", "$cursor", [Frame("text", "{"), Frame("binary", b"\1\2")]),
    Conversation("bad_query", None, []),
    Conversation("query", "abc", []),
    Conversation("late", None, []),
    Conversation("missing", None, [Frame("text", '{"type":"ping"}')]),
    Conversation("query", None, [Frame("binary", bytes(MAX_FRAME + 1))]),
]
"""Served to the end; refused before the upgrade (token, cursor); closed unauthenticated
(too late, no auth message); closed for a frame over the limit."""


@dataclass
class Socket:
    """One open websocket and what it received."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    ended: bool = False
    """The socket is closed (by the server, unless the client closed it first)."""

    async def read(self) -> None:
        async for msg in self.ws:
            assert msg.type == WSMsgType.TEXT, msg  # the server sends JSON text only
            frame = json.loads(msg.data)
            assert isinstance(frame, dict) and isinstance(frame["type"], str), frame
            assert isinstance(frame["cursor"], int), frame
            if frame["type"] == "error":
                assert frame["code"] and frame["message"], frame
            async with self.changed:
                self.frames.append(frame)
                self.changed.notify_all()
        async with self.changed:
            self.ended = True
            self.changed.notify_all()

    async def wait(self, kind: str, timeout: float = 20.0, since: int = 0, *,
                   or_error: bool = True, **match: Any) -> dict[str, Any] | None:
        """The first frame from index ``since`` of type ``kind`` (or an error, with
        ``or_error``) matching ``match``; None if the socket ends first."""
        kinds = (kind, "error") if or_error else (kind,)

        def found() -> dict[str, Any] | None:
            return next((f for f in self.frames[since:] if f["type"] in kinds
                         and all(f.get(k) == v for k, v in match.items())), None)

        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: found() is not None or self.ended)
        return found()

    def errors(self) -> int:
        return sum(1 for f in self.frames if f["type"] == "error")


@dataclass
class Witness:
    """What the fuzzing client must never see, and what it may resume from."""

    cursor: int = 0
    foreign_cursor: int = 0
    foreign_ids: set[str] = field(default_factory=set)


async def good_ask(good: Socket, witness: Witness) -> None:
    """The well-behaved client asks and gets its whole answer (not cancelled by anyone)."""
    before = len(good.frames)
    await good.ws.send_str(json.dumps({"type": "ask", "text": "Say hi."}))
    accepted = await good.wait("accepted", 30, before)
    assert accepted is not None and accepted["type"] == "accepted", good.frames[before:]
    rid = accepted["request_id"]
    final = await good.wait("answer.final", 90, before, request_id=rid)
    assert final is not None and final["type"] == "answer.final", final
    assert final["cancelled"] is False, final
    witness.foreign_ids.add(rid)
    witness.foreign_cursor = max(witness.foreign_cursor, final["cursor"])


async def converse(gw: Gateway, http: aiohttp.ClientSession, conv: Conversation,
                   witness: Witness) -> str:
    """How the conversation ended: "http <status>", "close <code>" or "open"."""
    token, other = gw.token(WS_A, "s-fuzz"), gw.token(WS_B, "s-other")
    values = {"$token": token, "$other": other, "$cursor": witness.cursor,
              "$foreign": witness.foreign_cursor}
    params: dict[str, str] = {}
    if conv.auth in ("query", "bad_query"):
        params["token"] = token if conv.auth == "query" else "not-a-token"
    if conv.after is not None:
        params["after"] = str(witness.cursor) if conv.after == "$cursor" else conv.after
    url = "ws" + gw.url.removeprefix("http") + "/api/ws"
    try:
        ws = await http.ws_connect(url, params=params, max_msg_size=0, autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        refused = exc.status
    else:
        refused = None
    if refused is not None:  # a bad token or cursor in the query: a 4xx before the upgrade
        assert refused in (400, 401), refused
        assert conv.auth == "bad_query" or conv.after in ("abc", "-1", "1.5"), (conv, refused)
        return f"http {refused}"
    sock = Socket(ws)
    reader = asyncio.create_task(sock.read())
    try:
        await _talk(sock, conv, values)
        server_closed = sock.ended  # before the client closes it
    finally:
        if not ws.closed:
            await ws.close()
        await asyncio.wait_for(reader, 10)
    for frame in sock.frames:
        assert frame.get("request_id") not in witness.foreign_ids, frame  # never another's
        witness.cursor = max(witness.cursor, frame["cursor"])
    if server_closed:
        assert ws.close_code in CLOSE_CODES, (ws.close_code, conv, sock.frames[-3:])
        return f"close {ws.close_code}"
    return "open"


async def _talk(sock: Socket, conv: Conversation, values: dict[str, Any]) -> None:
    ws, authed = sock.ws, conv.auth == "query"
    if conv.auth == "late":
        await asyncio.sleep(AUTH_TIMEOUT + 0.5)
    if conv.auth in ("message", "late", "bad_message"):
        token = values["$token"] if conv.auth != "bad_message" else "not-a-token"
        with contextlib.suppress(ConnectionError):  # too late: the server may have closed it
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
        authed = conv.auth == "message"
    if conv.auth in ("late", "bad_message"):  # told why, then closed 4401
        told = await sock.wait("error")
        assert told is not None and told["code"] == "unauthorized", sock.frames
        await sock.wait("never", 10, or_error=False)
        assert sock.ended and ws.close_code == 4401, (ws.close_code, sock.frames)
        return
    bad, sent = 0, []
    for frame in conv.frames:
        if sock.ended:
            break
        try:
            if frame.kind == "binary":
                await ws.send_bytes(frame.data)  # type: ignore[arg-type]
            else:
                body = fill(frame.data, values)  # type: ignore[arg-type]
                bad += certainly_bad(body)
                sent.append(body[:200])
                await ws.send_str(body)
        except ConnectionError:
            break  # the server closed it meanwhile (a frame over the limit)
    if sock.ended:
        return
    with contextlib.suppress(ConnectionError):  # closed meanwhile: no pong, checked below
        await ws.send_str(json.dumps({"type": "ping"}))
    pong = await sock.wait("pong", 30, or_error=False)
    if pong is None:  # closed instead: an unauthenticated socket, or a frame over the limit
        assert sock.ended and not (authed and ws.close_code == 1000), sock.frames[-3:]
        return
    if authed:  # every frame no version of the protocol accepts was answered by an error
        assert sock.errors() >= bad, (bad, sent, sock.frames)


async def test_any_conversation_gets_answers_and_another_client_keeps_being_served(
    nc: NATS, streams: None, workspaces: Ensure, settings: Settings, tmp_path: Path,
) -> None:
    cfg = gateway_settings(
        settings, max_frame_bytes=MAX_FRAME, auth_timeout=AUTH_TIMEOUT,
        max_ws_audio_bytes=256 * 1024, rate_limit_burst=10_000, rate_limit_per_second=1_000.0,
    ).model_copy(update={"reason": ReasonSettings(max_tokens=4)})
    loop = asyncio.get_running_loop()
    witness = Witness()
    ends: list[str] = []
    async with running(build_reason(cfg), cfg) as reason, serving(cfg) as gw, \
            aiohttp.ClientSession() as http:
        good_ws = await http.ws_connect(gw.ws_url(gw.token(WS_B, "s-good")))
        good = Socket(good_ws)
        good_reader = asyncio.create_task(good.read())

        async def one(conv: Conversation) -> None:
            ends.append(await asyncio.wait_for(converse(gw, http, conv, witness), 90))
            await good_ask(good, witness)

        try:
            await asyncio.to_thread(run_examples, loop, conversations(MAX_FRAME), one,
                                    EXAMPLES, 240)
            for conv in EVERY_END:  # whatever the examples were, each way once more
                await one(conv)
            assert not good.ended and not reason.done()
        finally:
            await good_ws.close()
            await asyncio.wait_for(good_reader, 10)
    assert len(ends) >= EXAMPLES // 2
    assert len(witness.foreign_ids) == len(ends)  # one answered ask after each
    assert ends[-len(EVERY_END):] == ["open", "http 401", "http 400", "close 4401",
                                      "close 4401", "close 1009"], ends
