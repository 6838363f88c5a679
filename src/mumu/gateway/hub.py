"""Fan-out of results to the sockets and waiters of this process, by (workspace, session).

Results reach the hub through NATS (``feed.LiveFeed``), never from another part of
this process, so any replica serves any session.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, Protocol

from nats.aio.msg import Msg

from mumu.contracts.event_types import EventType
from mumu.contracts.ids import json_id_field

log = logging.getLogger("mumu.gateway.hub")

_SESSION = json_id_field("session_id")
_REQUEST = json_id_field("request_id")


class ResultEvent:
    """One client-visible event and its cursor (its ``MUMU_RESULTS`` sequence).

    Built once per result on the feed's hot path, so only what routing needs is read
    from the raw JSON up front (the session); the request id and the parsed body are
    read when someone asks (waiters, the demo's history), and sockets send the raw
    JSON with ``type`` and ``cursor`` spliced in.
    """

    __slots__ = ("_body", "_frame", "_request_id", "cursor", "published_at", "raw",
                 "session_id", "type", "workspace_id")

    def __init__(self, cursor: int, type_: EventType, workspace_id: str, session_id: str,
                 raw: bytes, *, published_at: float = 0.0) -> None:
        self.cursor = cursor
        self.type = type_
        self.workspace_id = workspace_id
        self.session_id = session_id
        self.raw = raw
        self.published_at = published_at
        self._frame: bytes | None = None
        self._request_id: str | None = None
        self._body: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"ResultEvent(cursor={self.cursor}, type={self.type!s}, "
                f"workspace_id={self.workspace_id!r}, session_id={self.session_id!r})")

    @property
    def request_id(self) -> str:
        """The request the event belongs to ("" when the event names none)."""
        if self._request_id is None:
            found = _REQUEST.search(self.raw)
            self._request_id = found[1].decode() if found is not None else ""
        return self._request_id

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self.raw)
        return self._body

    def frame(self) -> bytes:
        """The websocket text: ``{"type", "cursor", ...every event field}``, UTF-8."""
        if self._frame is None:
            self._frame = b"%b%d,%b" % (_HEADS[self.type], self.cursor, self.raw[1:])
        return self._frame


_HEADS: Final = {kind: f'{{"type":"{kind}","cursor":'.encode() for kind in EventType}


def parse(sequence: int, msg: Msg, published_at: float = 0.0) -> ResultEvent | None:
    """The event of a result message, or None (logged) when it is not one."""
    route = _route(sequence, msg.subject, msg.data)
    if route is None:
        return None
    kind, workspace, session = route
    return ResultEvent(sequence, kind, workspace, session, msg.data, published_at=published_at)


def _route(sequence: int, subject: str, data: bytes) -> tuple[EventType, str, str] | None:
    """(type, workspace, session) of a result message; None (logged) when it is not an
    event."""
    prefix, _, workspace = subject.rpartition(".")
    kind = EventType.of_prefix(prefix)
    session = _SESSION.search(data)
    if kind is None or session is None or data[:1] != b"{":
        log.warning("result %d on %s is not an event; skipped", sequence, subject)
        return None
    return kind, workspace, session[1].decode()


class Sink(Protocol):
    async def push(self, event: ResultEvent) -> None:
        """Take ``event`` without waiting for anyone (write it, queue it, or drop the
        sink): the feed dispatches every result through here, one after the other."""


class Hub:
    """Sinks by (workspace, session), kept as tuples: a subscribe or unsubscribe (rare)
    replaces the tuple, so a dispatch (every result) iterates without copying."""

    def __init__(self) -> None:
        self._sinks: dict[tuple[str, str], tuple[Sink, ...]] = {}
        self.dispatched = 0

    def subscribe(self, workspace_id: str, session_id: str, sink: Sink) -> None:
        key = (workspace_id, session_id)
        sinks = self._sinks.get(key, ())
        if sink not in sinks:
            self._sinks[key] = (*sinks, sink)

    def unsubscribe(self, workspace_id: str, session_id: str, sink: Sink) -> None:
        key = (workspace_id, session_id)
        left = tuple(s for s in self._sinks.get(key, ()) if s is not sink)
        if left:
            self._sinks[key] = left
        else:
            self._sinks.pop(key, None)

    @property
    def sessions(self) -> int:
        return len(self._sinks)

    async def on_message(self, sequence: int, subject: str, data: bytes,
                         published_at: float) -> None:
        """Called by the feed for each result, in stream order. The event is built only
        when a sink of this process wants it (with replicas, most results are another
        replica's)."""
        route = _route(sequence, subject, data)
        if route is None:
            return
        kind, workspace, session = route
        sinks = self._sinks.get((workspace, session))
        if sinks is None:
            return
        event = ResultEvent(sequence, kind, workspace, session, data,
                            published_at=published_at)
        self.dispatched += 1
        for sink in sinks:
            await sink.push(event)
