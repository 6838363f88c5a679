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

log = logging.getLogger("mumu.gateway.hub")

TERMINAL_FOR_ASK = frozenset({"answer.final", "error"})
TERMINAL_FOR_TRANSCRIPT = frozenset({"transcript.final", "error"})


@dataclass(slots=True)
class ResultEvent:
    """One client-visible event and its cursor (its ``MUMU_RESULTS`` sequence)."""

    cursor: int
    type: str
    workspace_id: str
    session_id: str
    request_id: str
    body: dict[str, Any]
    raw: bytes
    published_at: float
    _frame: str | None = field(default=None, repr=False)

    def frame(self) -> str:
        """The websocket text: ``{"type", "cursor", ...every event field}``."""
        if self._frame is None:
            head = f'{{"type":"{self.type}","cursor":{self.cursor},'
            self._frame = head + self.raw.decode()[1:]
        return self._frame


def event_type(subject: str) -> str:
    """``mumu.answer.delta.<ws>`` → ``answer.delta``."""
    head = subject.rpartition(".")[0]
    return head.removeprefix("mumu.")


def parse(sequence: int, msg: Msg) -> ResultEvent | None:
    try:
        body = json.loads(msg.data)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not msg.data.startswith(b"{"):
        log.warning("result %d on %s is not a JSON object; skipped", sequence, msg.subject)
        return None
    workspace = subjects.last_token(msg.subject)
    published = msg.metadata.timestamp.timestamp() if msg.reply else 0.0
    return ResultEvent(
        cursor=sequence,
        type=event_type(msg.subject),
        workspace_id=workspace,
        session_id=str(body.get("session_id", "")),
        request_id=str(body.get("request_id", "")),
        body=body,
        raw=msg.data,
        published_at=published,
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

    def on_message(self, sequence: int, msg: Msg) -> None:
        """Called by the feed for each result, in stream order."""
        event = parse(sequence, msg)
        if event is None:
            return
        sinks = self._sinks.get((event.workspace_id, event.session_id))
        if not sinks:
            return
        self.dispatched += 1
        for sink in tuple(sinks):
            sink.push(event)
