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
import re
from typing import Any

import nats.errors
import nats.js.errors

from mumu.gateway.asks import FORMATS, audio_content_type
from mumu.gateway.binding import validated
from mumu.gateway.client_messages import BAD_MESSAGE, AskMessage, AudioEndMessage
from mumu.gateway.deps import GatewayDeps
from mumu.gateway.errors import ApiError
from mumu.gateway.feed import replay
from mumu.gateway.hub import ResultEvent, parse
from mumu.gateway.outbox import Outbox
from mumu.gateway.ranges import CursorRanges
from mumu.gateway.tokens import SessionClaims

log = logging.getLogger("mumu.gateway.ws")

CLOSE_UNAUTHORIZED = 4401
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REPLAY_PASSES = 8
"""Replays of one resume chasing live events it could not hold; then the client is
too slow for the stream and is closed (1013)."""


class ClientSocket:
    """A hub sink for one socket: events go straight out while its client keeps up; its
    outbox queues them, in order, while it does not."""

    def __init__(self, transport: asyncio.BaseTransport, claims: SessionClaims,
                 deps: GatewayDeps) -> None:
        self.claims = claims
        self.deps = deps
        self.outbox = Outbox(transport, deps.settings.gateway.client_queue)
        self.cursor = 0
        """The highest cursor this client has: the last event delivered to it, or the
        ``after`` it resumed from (0: none yet). Control messages carry it, so a client
        resuming from any cursor it was sent never skips an event."""
        self.live_from = 0
        """Every event of the session after this cursor reaches the socket live."""
        self._live_upto = 0
        """The highest cursor the feed has pushed to this socket."""
        self._claimed = 0
        """The highest ``after`` the client resumed from: it has everything up to it."""
        self._replayed = CursorRanges()
        """Cursor ranges ``(after, upto]`` replays sent in full (the session's events)."""
        self._unsent = CursorRanges()
        """Live events not sent because the client claimed them (a resume from before
        them sends them)."""
        self._held: list[ResultEvent] | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._replay_at: int | None = None
        """While a replay runs: the cursor up to which the client has every event."""
        self._skipped = 0
        """While a replay runs: the highest live event it must still read (not held)."""
        self._audio = bytearray()
        self.going_away = False
        """The gateway is shutting down; ``close_all`` closes this socket (1001)."""

    # --- outgoing -------------------------------------------------------------------

    def go_live(self, position: int) -> None:
        """The feed has dispatched up to ``position``; later events are pushed here."""
        self.live_from = self._live_upto = position

    def push(self, event: ResultEvent) -> None:
        before, self._live_upto = self._live_upto, max(self._live_upto, event.cursor)
        if event.cursor <= self._claimed:  # the client has it: not sent, but not "sent live"
            self._unsent.add(before, event.cursor)
            return
        if self.outbox.stopped or event.cursor in self._replayed:
            return
        if self._held is not None:  # a resume is replaying: keep live events for after it
            self._hold(event)
            return
        if self.outbox.send(event.frame()):
            self._sent(event)
            return
        self._too_slow()

    def _too_slow(self) -> None:
        self.deps.metrics.slow_clients.inc()
        log.warning("websocket fell %d events behind; closing", self.outbox.limit)
        self.outbox.stop(too_slow=True)  # the socket closes (1013); the client resumes

    def _hold(self, event: ResultEvent) -> None:
        """A live event during a replay. Every live event is in the stream already, so
        one the replay went past was sent by it, and one the bounded hold cannot keep
        is left for the replay to read (it goes on until past ``_skipped``)."""
        if self._held is None or event.cursor <= (self._replay_at or 0):
            return
        if len(self._held) < self.outbox.limit:
            self._held.append(event)
        else:
            self._skipped = max(self._skipped, event.cursor)

    def _sent(self, event: ResultEvent) -> None:
        self.cursor = max(self.cursor, event.cursor)
        self.deps.metrics.sent(event)

    def quiet(self, *, going_away: bool = False) -> None:
        """Send nothing more: off the hub, the outbox stopped (what it queued is dropped)."""
        self.going_away = self.going_away or going_away
        self.deps.hub.unsubscribe(self.claims.workspace_id, self.claims.session_id, self)
        self.outbox.stop()

    @property
    def closing(self) -> bool:
        """The socket is to be closed because the client fell behind."""
        return self.outbox.too_slow

    def control(self, kind: str, request_id: str | None = None, **fields: Any) -> None:
        # during a replay only what it covered is known to be complete
        cursor = self.cursor if self._replay_at is None else self._replay_at
        frame = json.dumps({"type": kind, "request_id": request_id, "cursor": cursor, **fields})
        self.outbox.send(frame.encode())

    def error(self, code: str, message: str, request_id: str | None = None) -> None:
        self.control("error", request_id, code=code, message=message, stage="gateway")

    async def writer(self) -> None:
        """Writes what queued while the client was behind; ends when the socket stops."""
        await self.outbox.run()

    # --- incoming -------------------------------------------------------------------

    async def on_binary(self, data: bytes) -> None:
        limit = self.deps.settings.gateway.max_ws_audio_bytes
        if len(self._audio) + len(data) > limit:
            self._audio.clear()
            self.error("too_large", f"audio over {limit} bytes before audio.end; discarded")
            return
        self._audio.extend(data)

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
            self.error(exc.code, exc.message)

    def _admit(self) -> None:
        self.deps.limiter.take(self.claims.workspace_id)
        self.deps.lag.guard()

    async def _ask(self, message: dict[str, Any]) -> None:
        ask = validated(AskMessage, message, BAD_MESSAGE)
        limit = self.deps.settings.gateway.max_text_chars
        if len(ask.text) > limit:
            raise ApiError(413, "too_large", f"text longer than {limit} characters")
        self._admit()
        self.deps.metrics.asks.labels("text").inc()
        rid = await self.deps.asker.ask_text(
            self.claims.workspace_id, self.claims.session_id, ask.text, ask.language
        )
        self.control("accepted", rid, session_id=self.claims.session_id)

    async def _audio_end(self, message: dict[str, Any]) -> None:
        audio, self._audio = bytes(self._audio), bytearray()
        end = validated(AudioEndMessage, message, BAD_MESSAGE)
        declared = FORMATS.get(end.format.lower()) if end.format else None
        content_type = audio_content_type(audio, declared)
        self._admit()
        self.deps.metrics.asks.labels("audio").inc()
        rid = await self.deps.asker.ask_audio(
            self.claims.workspace_id, self.claims.session_id, audio, content_type, end.options()
        )
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
        """``?after=``: replayed before ``ready``, under the same rate limit."""
        try:
            self.deps.limiter.take(self.claims.workspace_id)
        except ApiError as exc:
            self.error(exc.code, exc.message)
            return
        await self.resume(after)

    async def stop(self) -> None:
        """The socket is closing: end a running replay."""
        if self._resuming is not None:
            self._resuming.cancel()
            for outcome in await asyncio.gather(self._resuming, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("resume failed: %r", outcome)

    async def resume(self, after: int) -> None:
        """Replay this session's events after ``after``, then what arrived meanwhile.

        Exactly once per socket and in order, remembering ranges rather than every
        cursor sent: the replay skips what the feed already pushed here (after
        ``live_from``) and what earlier replays sent; live events it overtook are
        skipped when they arrive. Everything in the stream when the resume started is
        sent before ``resumed``.
        """
        ws_id, session = self.claims.workspace_id, self.claims.session_id
        self._claimed = max(self._claimed, after)
        self.cursor = max(self.cursor, after)
        live_done = self._live_upto  # (live_from, live_done]: already sent live
        self._held, self._skipped = [], 0
        replayed, covered = 0, after
        self._replay_at = after
        try:
            for _ in range(REPLAY_PASSES):  # another pass for live events not held
                async for sequence, msg in replay(self.deps.nc, ws_id, covered):
                    if self.outbox.stopped:  # the client is gone (or too slow): stop reading
                        return
                    sent = (self.live_from < sequence <= live_done
                            and sequence not in self._unsent) or sequence in self._replayed
                    event = None if sent else parse(sequence, msg)
                    if event is not None and event.session_id == session:
                        await self.outbox.put(event.frame())
                        self._sent(event)
                        replayed += 1
                    covered = self._replay_at = sequence
                if self._skipped <= covered:
                    break
            else:
                self._too_slow()
        except (TimeoutError, RuntimeError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("replay failed: %r", exc)
            self.error("resume_failed", f"could not replay: {exc}; resume again")
        finally:
            self._replay_at = None
            self._replayed.add(after, covered)
            held, self._held = self._held, None
            for event in held or ():
                self.push(event)
        self.control("resumed", None, after=after, replayed=replayed)

    async def _cancel(self, message: dict[str, Any]) -> None:
        rid = message.get("request_id")
        if not isinstance(rid, str) or not _ID.match(rid):
            raise ApiError(400, "bad_message", 'cancel needs "request_id" (an id from "accepted")')
        await self.deps.asker.cancel(self.claims.workspace_id, self.claims.session_id, rid)
        self.control("cancelling", rid)

    async def _ping(self, _: dict[str, Any]) -> None:
        self.control("pong")

    async def _auth_again(self, _: dict[str, Any]) -> None:
        self.error("bad_message", "this socket is already authenticated")
