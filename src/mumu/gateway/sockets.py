"""One websocket client: auth, asks, audio frames, resume, and its ordered outgoing queue.

Every server message carries ``request_id`` and ``cursor``. Results are the
``MUMU_RESULTS`` events of the socket's (workspace, session); ``resume`` replays
from JetStream what the client missed, and a cursor is never sent twice on one socket
(without remembering what was sent: see ``resume``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import nats.errors
import nats.js.errors

from mumu.contracts.event_types import EventType
from mumu.contracts.ids import id_or_none
from mumu.gateway.asks import FORMATS, audio_content_type
from mumu.gateway.audio_buffer import AudioBuffer
from mumu.gateway.binding import validated
from mumu.gateway.client_messages import BAD_MESSAGE, AskMessage, AudioEndMessage
from mumu.gateway.cursors import REPLAY_PASSES, SocketCursors
from mumu.gateway.deps import GatewayDeps
from mumu.gateway.errors import ApiError, retry_fields
from mumu.gateway.feed import replay
from mumu.gateway.hub import ResultEvent, parse
from mumu.gateway.live_socket import LiveSocket
from mumu.gateway.outbox import Outbox
from mumu.gateway.tokens import SessionClaims

log = logging.getLogger("mumu.gateway.ws")

CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013


class ClientSocket:
    """A hub sink for one socket: events go straight out while its client keeps up; its
    outbox queues them, in order, while it does not. Which event to send, hold or skip
    is ``cursors.SocketCursors``'s call."""

    def __init__(self, outbox: Outbox, claims: SessionClaims, deps: GatewayDeps) -> None:
        self.claims = claims
        self.deps = deps
        self.outbox = outbox
        self.cursors: SocketCursors[ResultEvent] = SocketCursors(self.outbox.limit)
        self._resuming: asyncio.Task[None] | None = None
        gw = deps.settings.gateway
        self._audio = AudioBuffer(deps.admission.audio_buffers, claims.workspace_id,
                                  gw.max_ws_audio_bytes)
        self.live = LiveSocket(self, self._audio)
        self.going_away = False
        """The gateway is shutting down; ``close_all`` closes this socket (1001)."""
        self.close_reason: str | None = None
        """Why the gateway closes this socket: the client resumes from its cursor."""
        self.farewell: bytes | None = None  # the error frame sent just before the close
        self.close_code = CLOSE_TRY_AGAIN
        self._expiry: asyncio.TimerHandle | None = None

    # --- outgoing -------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        return self.cursors.cursor

    def go_live(self, position: int) -> None:
        """The feed has dispatched up to ``position``; later events are pushed here."""
        self.cursors.go_live(position)

    async def push(self, event: ResultEvent) -> None:
        """A hub sink: never waits for the client (the outbox writes or queues)."""
        if not self.cursors.live(event) or self.outbox.stopped:
            return
        if await self.outbox.send(event.frame()):
            self._sent(event)
            return
        self._too_slow()

    def _too_slow(self) -> None:  # its outbox refused a frame
        self.deps.metrics.slow_clients.inc()
        log.warning("websocket fell %d events behind; closing", self.outbox.limit)
        self._close("client too slow: reconnect and resume from your cursor")

    def _close(self, reason: str, code: int = CLOSE_TRY_AGAIN,
               error: tuple[str, str] | None = None) -> None:
        """Stop sending (what is queued is dropped); the socket closes with ``code``, after
        the ``error`` (code, message) that says why, if the client is not behind."""
        if self.close_reason is None:
            self.close_reason, self.close_code = reason, code
            if error is not None:
                self.farewell = self._frame(EventType.ERROR, None, code=error[0],
                                            message=error[1], stage="gateway")
        self.outbox.stop()

    def watch_expiry(self) -> None:
        """Close the socket when its session token expires (a timer, not a task): the
        client gets ``token_expired`` and close 4401, and resumes with a new token. An
        ``auth`` message with a new token moves the deadline."""
        if self._expiry is not None:
            self._expiry.cancel()
        left = self.claims.expires_at - time.time()
        if left > 0:
            self._expiry = asyncio.get_running_loop().call_later(left, self.watch_expiry)
            return
        self._expiry = None
        self._close("session token expired", CLOSE_UNAUTHORIZED, (
            "token_expired", "session token expired: get a new one (POST /api/session) and "
            "reconnect with ?after=<your cursor>"))

    def end(self, code: str, message: str) -> None:
        """The socket's token no longer works (its API key was revoked): say why and
        close it (4401)."""
        self._close(message, CLOSE_UNAUTHORIZED, (code, message))

    def _sent(self, event: ResultEvent) -> None:
        self.cursors.sent(event.cursor)
        self.deps.metrics.sent(event)

    def quiet(self, *, going_away: bool = False) -> None:
        """Send nothing more: off the hub, the outbox stopped (what it queued is dropped)."""
        self.going_away = self.going_away or going_away
        if self._expiry is not None:
            self._expiry.cancel()
        self.deps.hub.unsubscribe(self.claims.workspace_id, self.claims.session_id, self)
        self.outbox.stop()

    def control(self, kind: str, request_id: str | None = None, **fields: Any) -> None:
        if not self.outbox.queue(self._frame(kind, request_id, **fields)):
            self._too_slow()

    def _frame(self, kind: str, request_id: str | None, **fields: Any) -> bytes:
        cursor = self.cursors.control_cursor
        return json.dumps({"type": kind, "request_id": request_id, "cursor": cursor,
                           **fields}).encode()

    def error(self, code: str, message: str, request_id: str | None = None,
              **fields: Any) -> None:
        self.control(EventType.ERROR, request_id, code=code, message=message, stage="gateway",
                     **fields)

    # --- incoming -------------------------------------------------------------------

    async def on_binary(self, data: bytes) -> None:
        refused = None if self.live.running else self._audio.add(data)
        if self.live.running:  # a live stream's audio
            await self.live.frame(data)
        elif refused is not None:
            self.error(refused.code, refused.message)

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self.error("bad_message", "not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.error("bad_message", 'a message is a JSON object with a string "type"')
            return
        handler = {
            "ask": self._ask,
            "audio.end": self._audio_end,
            "stream.start": self.live.start,
            "stream.end": self.live.end,
            "resume": self._resume,
            "cancel": self._cancel,
            "ping": self._ping,
            "auth": self._auth_again,
        }.get(message["type"])
        if handler is None:
            self.error("unknown_type", f"unknown message type {message['type'][:64]!r}")
            return
        try:
            await handler(message)
        except ApiError as exc:
            self.error(exc.code, exc.message, exc.request_id, **retry_fields(exc))

    def admit(self) -> None:
        self.deps.limiter.take(self.claims.workspace_id)
        self.deps.lag.guard()

    async def _ask(self, message: dict[str, Any]) -> None:
        ask = validated(AskMessage, message, BAD_MESSAGE)
        limit = self.deps.settings.gateway.max_text_chars
        if len(ask.text) > limit:
            raise ApiError(413, "too_large", f"text longer than {limit} characters")
        self.admit()
        self.deps.metrics.asks.labels("text").inc()
        rid = (await self.deps.asker.ask_text(
            self.claims.workspace_id, self.claims.session_id, ask.text, ask.language
        )).request_id
        self.control("accepted", rid, session_id=self.claims.session_id)

    async def _audio_end(self, message: dict[str, Any]) -> None:
        audio = self._audio.take()
        if audio is None:  # refused at its first frame (the client was told then)
            return
        end = validated(AudioEndMessage, message, BAD_MESSAGE)
        declared = FORMATS.get(end.format.lower()) if end.format else None
        content_type = audio_content_type(audio, declared)
        self.admit()
        self.deps.metrics.asks.labels("audio").inc()
        rid = (await self.deps.asker.ask_audio(
            self.claims.workspace_id, self.claims.session_id, audio, content_type, end.options()
        )).request_id
        self.control("accepted", rid, session_id=self.claims.session_id, bytes=len(audio))

    async def _resume(self, message: dict[str, Any]) -> None:
        """Replays in the background (the socket keeps answering meanwhile), one at a
        time, each spending from the workspace's rate limit (a replay is a JetStream
        consumer scanning the stream)."""
        after = message.get("after")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ApiError(400, "bad_message", 'resume needs "after": a cursor (integer >= 0)')
        if self._resuming is not None and not self._resuming.done():
            raise ApiError(409, "busy", "a resume is already running; wait for \"resumed\"")
        self.deps.limiter.take(self.claims.workspace_id)
        self._resuming = asyncio.create_task(self.resume(after))

    async def resume_on_connect(self, after: int) -> None:
        """``?after=``: replayed before ``ready``, under the same rate limit. Refused, the
        socket closes: going live without the replay would leave a gap before the live
        events, and a client resuming from the last of those would never fill it."""
        try:
            self.deps.limiter.take(self.claims.workspace_id)
        except ApiError as exc:
            self._close(f"{exc.message}: reconnect and resume from your cursor later",
                        error=(exc.code, exc.message))
            return
        await self.resume(after)

    async def stop(self) -> None:
        """The socket is closing: end a running replay and live stream, drop buffered audio."""
        self._audio.release()
        await self.live.close()
        if self._resuming is not None:
            self._resuming.cancel()
            for outcome in await asyncio.gather(self._resuming, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("resume failed: %r", outcome)

    async def resume(self, after: int) -> None:
        """Replay this session's events after ``after``, then what arrived meanwhile.

        Everything in the stream when the resume started is sent before ``resumed``. A
        replay that fails closes the socket (1013): the client has every event up to the
        last cursor it got and resumes from there.
        """
        ws_id, session = self.claims.workspace_id, self.claims.session_id
        cursors = self.cursors
        cursors.begin_resume(after)
        replayed, complete = 0, False
        try:
            for _ in range(REPLAY_PASSES):  # another pass for live events not held
                async for sequence, msg in replay(self.deps.nc, ws_id, cursors.covered):
                    if self.outbox.stopped:  # the client is gone (or too slow): stop reading
                        return
                    event = parse(sequence, msg) if cursors.wanted(sequence) else None
                    if event is not None and event.session_id == session:
                        await self.outbox.put(event.frame())
                        self._sent(event)
                        replayed += 1
                    cursors.passed(sequence)
                if cursors.caught_up:
                    complete = not self.outbox.stopped
                    break
            else:
                self.deps.metrics.slow_clients.inc()
                self._close("client too slow for the stream: reconnect and resume from "
                            "your cursor")
        except (TimeoutError, RuntimeError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("replay failed: %r", exc)
            self._close("replay failed: reconnect and resume from your cursor",
                        error=("resume_failed", "could not replay the missed events"))
        finally:
            for event in cursors.end_resume(after, complete=complete):
                await self.push(event)
        if complete:
            self.control("resumed", None, after=after, replayed=replayed)

    async def _cancel(self, message: dict[str, Any]) -> None:
        rid = id_or_none(message.get("request_id"))
        if rid is None:
            raise ApiError(400, "bad_message", 'cancel needs "request_id" (an id from "accepted")')
        await self.deps.asker.cancel(self.claims.workspace_id, self.claims.session_id, rid)
        self.control("cancelling", rid)

    async def _ping(self, _: dict[str, Any]) -> None:
        self.control("pong")

    async def _auth_again(self, message: dict[str, Any]) -> None:
        """A new token for this socket's session: the socket stays open until it expires."""
        claims = await self.deps.key_status.renewal(self.deps.signer, message.get("token"),
                                                    self.claims)
        self.claims = claims
        self.watch_expiry()
        self.control("authenticated", None, expires_at=claims.expires_at)
