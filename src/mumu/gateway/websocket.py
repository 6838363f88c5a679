"""``GET /api/ws``: authenticate, subscribe the socket to its session, read until closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from mumu.contracts.event_types import EventType
from mumu.gateway.deps import DEPS
from mumu.gateway.errors import ApiError
from mumu.gateway.key_status import KeyStatus
from mumu.gateway.outbox import Outbox
from mumu.gateway.sockets import CLOSE_UNAUTHORIZED, ClientSocket
from mumu.gateway.tokens import InvalidTokenError, SessionClaims, TokenSigner
from mumu.logs import log_context

log = logging.getLogger("mumu.gateway.ws")

GOING_AWAY = b"gateway shutting down"
SOCKETS: web.AppKey[weakref.WeakKeyDictionary[web.WebSocketResponse, ClientSocket | None]] = (
    web.AppKey("sockets")
)
"""Open websockets, with their client once authenticated (closed on shutdown)."""
CLOSE_TOO_MANY = 4429
"""The workspace has as many sockets open on this gateway as it may
(``MUMU_GATEWAY__MAX_SOCKETS_PER_WORKSPACE``)."""


async def _first_message_auth(
    ws: web.WebSocketResponse, signer: TokenSigner, timeout: float, keys: KeyStatus
) -> SessionClaims | None:
    """Without ``?token=`` the first message must be ``{"type":"auth","token":...}``,
    within ``timeout`` seconds (``MUMU_GATEWAY__AUTH_TIMEOUT``)."""
    reason = "the first message must be {\"type\":\"auth\",\"token\":...}"
    code = "unauthorized"
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        msg = None
        reason = f"no auth message within {timeout:g} s"
    if msg is not None and msg.type == WSMsgType.TEXT:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            data = json.loads(msg.data)
            if data.get("type") == "auth" and isinstance(data.get("token"), str):
                try:
                    claims = signer.verify(data["token"])
                    await keys.require(claims)
                    return claims
                except InvalidTokenError as exc:
                    reason = str(exc)
                except ApiError as exc:
                    code, reason = exc.code, exc.message
    if not ws.closed:
        await ws.send_json(
            {"type": EventType.ERROR, "code": code, "message": reason, "request_id": None,
             "cursor": 0, "stage": "gateway"}
        )
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
    return None


def _after(request: web.Request) -> int | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "bad_request", "after is a cursor: a non-negative integer")
    return int(raw)


async def websocket(request: web.Request) -> web.StreamResponse:
    """A socket takes one of this process's places before the upgrade (``503`` when none
    is free) and one of its workspace's as soon as the workspace is known: before the
    upgrade with ``?token=`` (``429``), after the auth message otherwise (close 4429)."""
    deps = request.app[DEPS]
    signer = deps.signer
    gw = deps.settings.gateway
    claims: SessionClaims | None = None
    token = request.query.get("token")
    if token is not None:
        try:
            claims = signer.verify(token)
        except InvalidTokenError as exc:
            raise ApiError(401, "invalid_token", str(exc)) from exc
        await deps.key_status.require(claims)
    after = _after(request)
    places = deps.admission.sockets
    joined = claims.workspace_id if claims is not None else None
    places.enter(joined)
    try:
        ws = web.WebSocketResponse(
            max_msg_size=gw.max_frame_bytes, heartbeat=gw.heartbeat, compress=False
        )
        await ws.prepare(request)
        sockets = request.app[SOCKETS]
        sockets[ws] = None
        deps.metrics.sockets.inc()
        try:
            if claims is None:
                claims = await _first_message_auth(
                    ws, signer, gw.auth_timeout, deps.key_status)
                if claims is None:
                    return ws
                try:
                    places.join(claims.workspace_id)
                except ApiError as exc:
                    await _refuse(ws, exc, CLOSE_TOO_MANY)
                    return ws
                joined = claims.workspace_id
            if request.transport is None:  # the client went away during the handshake
                return ws
            outbox = Outbox(ws, request, gw.client_queue, gw.client_queue_bytes)
            client = ClientSocket(outbox, claims, deps)
            sockets[ws] = client
            with log_context(workspace_id=claims.workspace_id):  # every line of this socket
                await _serve(ws, client, after)
        finally:
            deps.metrics.sockets.dec()
            sockets.pop(ws, None)
        return ws
    finally:
        places.leave(joined)


async def _refuse(ws: web.WebSocketResponse, exc: ApiError, code: int) -> None:
    if not ws.closed:
        await ws.send_json(
            {"type": EventType.ERROR, "code": exc.code, "message": exc.message,
             "request_id": None, "cursor": 0, "stage": "gateway"}
        )
        await ws.close(code=code, message=exc.code.encode())


async def _read(ws: web.WebSocketResponse, client: ClientSocket) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await client.on_text(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await client.on_binary(msg.data)
        elif msg.type == WSMsgType.ERROR:
            log.info("websocket error: %r", ws.exception())
            return


async def _serve(ws: web.WebSocketResponse, client: ClientSocket, after: int | None) -> None:
    """Reader and writer run until either ends; then this task closes the socket (unless
    the gateway is shutting down: ``close_all`` does)."""
    deps, claims = client.deps, client.claims
    client.go_live(deps.feed_position())
    deps.hub.subscribe(claims.workspace_id, claims.session_id, client)
    client.watch_expiry()
    writer = asyncio.create_task(client.outbox.run())  # what queued while the client was behind
    reader: asyncio.Task[None] | None = None
    try:
        if after is not None:  # replayed before ready: ready's cursor covers the replay
            await client.resume_on_connect(after)
        client.control(
            "ready", None, workspace_id=claims.workspace_id, session_id=claims.session_id
        )
        reader = asyncio.create_task(_read(ws, client))
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.quiet()
        await client.stop()
        tasks = [t for t in (reader, writer) if t is not None]
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionError):
                log.error("websocket task failed: %r", outcome)
        if client.going_away:  # close_all closes it too: whoever comes first
            await ws.close(code=WSCloseCode.GOING_AWAY, message=GOING_AWAY)
        elif client.close_reason is not None:
            if client.farewell is not None:
                await client.outbox.last(client.farewell)
            await ws.close(code=client.close_code, message=client.close_reason.encode()[:120])
        elif not ws.closed:
            await ws.close(code=WSCloseCode.OK)


async def close_all(app: web.Application) -> None:
    """On shutdown: tell every client we are going away (it reconnects to another replica)."""
    sockets = app[SOCKETS]
    open_now = list(sockets.items())
    for _, client in open_now:  # nothing more is sent after the Close frame (RFC 6455 5.5.1)
        if client is not None:
            client.quiet(going_away=True)
    for ws, _ in open_now:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=GOING_AWAY)
