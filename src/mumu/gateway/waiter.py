"""Waiting for the whole result of one request (``?wait=true``, the OpenAI route).

The waiter is registered with the hub *before* the request is published, so it
cannot miss a result. On timeout it names the first stage that did not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from mumu.contracts import subjects
from mumu.contracts.event_types import EventType
from mumu.gateway.asks import Asked
from mumu.gateway.errors import ApiError
from mumu.gateway.feed import replay
from mumu.gateway.hangup import Connected, always, within
from mumu.gateway.hub import Hub, ResultEvent, parse


@dataclass(eq=False)
class RequestWaiter:
    """A hub sink collecting the events of one request until a terminal one."""

    terminal: frozenset[EventType]
    request_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    events: list[ResultEvent] = field(default_factory=list)
    arrived: dict[EventType, float] = field(default_factory=dict)
    audio_ready: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _early: list[ResultEvent] = field(default_factory=list)
    _cursors: set[int] = field(default_factory=set)

    async def push(self, event: ResultEvent) -> None:
        """A hub sink."""
        self.take(event)

    def take(self, event: ResultEvent) -> None:
        if self.request_id is None:  # published but the id not known yet: keep for later
            self._early.append(event)
            return
        if event.request_id != self.request_id or event.cursor in self._cursors:
            return  # another request's, or seen already (live and in a catch-up)
        self._cursors.add(event.cursor)
        self.events.append(event)
        self.on_event(event)
        self.arrived.setdefault(event.type, time.monotonic() - self.started)
        if event.type in self.terminal:
            self.done.set()

    def bind(self, request_id: str) -> None:
        self.request_id = request_id
        early, self._early = self._early, []
        for event in early:
            self.take(event)

    def on_event(self, event: ResultEvent) -> None:
        """Each new event of the request, as it is taken (a streaming caller's hook)."""

    def first(self, kind: EventType) -> ResultEvent | None:
        return next((e for e in self.events if e.type == kind), None)

    def missing_stage(self, audio: bool) -> str:
        if self.first(EventType.TRANSCRIPT_FINAL) is None and audio:
            return "transcribe" if self.audio_ready else "ingest"
        return "reason"


@contextlib.asynccontextmanager
async def waiting(
    hub: Hub, nc: NatsClient, workspace_id: str, session_id: str, terminal: frozenset[EventType],
    *, audio: bool, waiter: RequestWaiter | None = None,
) -> AsyncIterator[RequestWaiter]:
    """Register a waiter (``waiter``, or a new one) for (workspace, session); watch
    ``audio.ready`` for attribution."""
    waiter = waiter or RequestWaiter(terminal=terminal)
    hub.subscribe(workspace_id, session_id, waiter)
    sub = None
    if audio:

        async def on_ready(msg: Msg) -> None:
            with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
                if json.loads(msg.data).get("request_id") == waiter.request_id:
                    waiter.audio_ready = True

        sub = await nc.subscribe(subjects.AUDIO_READY.for_workspace(workspace_id), cb=on_ready)
    try:
        yield waiter
    finally:
        hub.unsubscribe(workspace_id, session_id, waiter)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


CATCH_UP_SLACK = 10.0
"""Seconds before the dedupe window a duplicate's catch-up starts reading (clock skew)."""
CATCH_UP_POLL = 0.5


async def catch_up(
    nc: NatsClient, waiter: RequestWaiter, workspace_id: str, window: float
) -> None:
    """A duplicate ask: its request was published up to ``window`` seconds ago, maybe in
    another session, so some or all of its results are stored already. Read them from
    ``MUMU_RESULTS`` (and what arrives after, every ``CATCH_UP_POLL``) until it is done."""
    since = datetime.now(UTC) - timedelta(seconds=window + CATCH_UP_SLACK)
    after = 0
    while not waiter.done.is_set():
        async for seq, msg in replay(nc, workspace_id, after, since=None if after else since):
            after = seq
            event = parse(seq, msg)
            if event is not None:
                waiter.take(event)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.done.wait(), CATCH_UP_POLL)


async def run_and_wait(
    hub: Hub, nc: NatsClient, workspace_id: str, session_id: str, *,
    terminal: frozenset[EventType], publish: Callable[[], Awaitable[Asked]], seconds: float,
    audio: bool, dedupe_window: float = 120.0, connected: Connected = always,
) -> RequestWaiter:
    """Publish (via ``publish``) and wait for a terminal event. A duplicate ask waits for
    the existing request's result (``catch_up``) instead of a new one.

    A pipeline error becomes the client's error; silence becomes a 504 naming the stage;
    a client that hangs up (``connected``) ends the wait (``hangup``).
    """
    async with waiting(hub, nc, workspace_id, session_id, terminal, audio=audio) as waiter:
        asked = await publish()
        waiter.bind(asked.request_id)
        catching = (asyncio.create_task(catch_up(nc, waiter, workspace_id, dedupe_window))
                    if asked.duplicate else None)
        try:
            await within(waiter.done.wait(), seconds, connected, waiter.request_id)
        except TimeoutError:
            stage = waiter.missing_stage(audio)
            raise ApiError(
                504, "timeout",
                f"the {stage} stage did not answer within {seconds:g} s "
                f"(request {waiter.request_id}); is `mumu stage {stage}` running?",
                request_id=waiter.request_id,
            ) from None
        finally:
            if catching is not None:
                catching.cancel()
                await asyncio.gather(catching, return_exceptions=True)
    error = waiter.first(EventType.ERROR)
    if error is not None:
        raise pipeline_error(error)
    return waiter


_ERROR_STATUS = {
    "unsupported_audio": 415,
    "too_large": 413,
    "empty_audio": 400,
    "too_long": 400,
    "no_speech": 422,
    "schema_violation": 400,
    "missing_header": 400,
    "unknown_workspace": 403,
    "reason_unavailable": 503,
    "quota_exceeded": 429,
    "workspace_shredded": 410,
    "result_bytes_exceeded": 429,
}


def pipeline_error(event: ResultEvent) -> ApiError:
    code = str(event.body.get("code", "internal"))
    status = _ERROR_STATUS.get(code, 502)
    stage = event.body.get("stage", "pipeline")
    # a quota refusal after publishing (audio too long, the day's audio spent): the error
    # event carries no time, so a conservative minute
    headers = {"Retry-After": "60"} if status == 429 else None
    return ApiError(status, code, f"{stage}: {event.body.get('message', 'failed')}",
                    headers=headers, request_id=event.request_id)
