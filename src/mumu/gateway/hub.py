"""Fan-out of results to the sockets and waiters of this process, by (workspace, session).

Results reach the hub through NATS (``feed.LiveFeed``), never from another part of
this process, so any replica serves any session.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.msg import Msg

from mumu.contracts import subjects

log = logging.getLogger("mumu.gateway.hub")

TERMINAL_FOR_ASK = frozenset({"answer.final", "error"})
TERMINAL_FOR_TRANSCRIPT = frozenset({"transcript.final", "error"})


_SESSION = re.compile(rb'"session_id":"([A-Za-z0-9_-]{1,64})"')
_REQUEST = re.compile(rb'"request_id":"([A-Za-z0-9_-]{1,64})"')


@dataclass(slots=True)
class ResultEvent:
    """One client-visible event and its cursor (its ``MUMU_RESULTS`` sequence).

    The body is parsed only when someone needs its fields (waiters, the demo's
    history); sockets send the raw JSON with ``type`` and ``cursor`` spliced in.
    """

    cursor: int
    type: str
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


def event_type(subject: str) -> str:
    """``mumu.answer.delta.<ws>`` → ``answer.delta``."""
    head = subject.rpartition(".")[0]
    return head.removeprefix("mumu.")


def ack_fields(reply: str) -> tuple[int, int, float, int]:
    """(stream seq, consumer seq, unix time, pending) from a JetStream ``$JS.ACK`` subject.

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``; v2 adds
    domain and account hash after ``ACK`` and a random token at the end.
    """
    t = reply.split(".")
    i = 5 if len(t) == 9 else 7
    return int(t[i]), int(t[i + 1]), int(t[i + 2]) / 1e9, int(t[i + 3])


def parse(sequence: int, msg: Msg, published_at: float = 0.0) -> ResultEvent | None:
    data = msg.data
    session = _SESSION.search(data)
    request = _REQUEST.search(data)
    if not data.startswith(b"{") or session is None or request is None:
        log.warning("result %d on %s is not an event; skipped", sequence, msg.subject)
        return None
    return ResultEvent(
        cursor=sequence,
        type=event_type(msg.subject),
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
