"""Fan-out of results to the sockets and waiters of this process, by (workspace, session).

Results reach the hub through NATS (``feed.LiveFeed``), never from another part of
this process, so any replica serves any session.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.msg import Msg

from mumu.contracts import subjects
from mumu.contracts.event_types import EventType
from mumu.contracts.ids import json_id_field

log = logging.getLogger("mumu.gateway.hub")

_SESSION = json_id_field("session_id")
_REQUEST = json_id_field("request_id")


@dataclass(slots=True)
class ResultEvent:
    """One client-visible event and its cursor (its ``MUMU_RESULTS`` sequence).

    The body is parsed only when someone needs its fields (waiters, the demo's
    history); sockets send the raw JSON with ``type`` and ``cursor`` spliced in.
    """

    cursor: int
    type: EventType
    workspace_id: str
    session_id: str
    request_id: str
    raw: bytes
    published_at: float
    _frame: bytes | None = field(default=None, repr=False)
    _body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self.raw)
        return self._body

    def frame(self) -> bytes:
        """The websocket text: ``{"type", "cursor", ...every event field}``, UTF-8."""
        if self._frame is None:
            head = f'{{"type":"{self.type}","cursor":{self.cursor},'.encode()
            self._frame = head + self.raw[1:]
        return self._frame


def parse(sequence: int, msg: Msg, published_at: float = 0.0) -> ResultEvent | None:
    data = msg.data
    kind = EventType.of_subject(msg.subject)
    session = _SESSION.search(data)
    request = _REQUEST.search(data)
    if kind is None or not data.startswith(b"{") or session is None or request is None:
        log.warning("result %d on %s is not an event; skipped", sequence, msg.subject)
        return None
    return ResultEvent(
        cursor=sequence,
        type=kind,
        workspace_id=subjects.last_token(msg.subject),
        session_id=session[1].decode(),
        request_id=request[1].decode(),
        raw=data,
        published_at=published_at,
    )


class Sink(Protocol):
    def push(self, event: ResultEvent) -> None:
        """Take ``event`` without blocking (queue it, or drop the sink)."""


class Hub:
    def __init__(self) -> None:
        self._sinks: defaultdict[tuple[str, str], set[Sink]] = defaultdict(set)
        self.dispatched = 0

    def subscribe(self, workspace_id: str, session_id: str, sink: Sink) -> None:
        self._sinks[(workspace_id, session_id)].add(sink)

    def unsubscribe(self, workspace_id: str, session_id: str, sink: Sink) -> None:
        key = (workspace_id, session_id)
        sinks = self._sinks.get(key)
        if sinks is None:
            return
        sinks.discard(sink)
        if not sinks:
            del self._sinks[key]

    @property
    def sessions(self) -> int:
        return len(self._sinks)

    def on_message(self, sequence: int, msg: Msg, published_at: float) -> None:
        """Called by the feed for each result, in stream order."""
        event = parse(sequence, msg, published_at)
        if event is None:
            return
        sinks = self._sinks.get((event.workspace_id, event.session_id))
        if not sinks:
            return
        self.dispatched += 1
        for sink in tuple(sinks):
            sink.push(event)
