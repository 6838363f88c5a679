"""The cursor and resume state of one websocket: which result to send, hold or skip.

No I/O: ``ClientSocket`` asks this unit about every live event the feed pushes and every
event a replay reads, and tells it what it sent. Exactly once and in order per socket,
remembering cursor *ranges* rather than every cursor sent:

- every event of the session after ``live_from`` (the feed position when the socket
  subscribed) reaches the socket live, in stream order;
- a replay (``resume``) sends what the socket never sent: it skips what the feed pushed
  here already and what earlier replays covered (kept as ranges);
- live events arriving during a replay are held (up to ``hold_limit``) and sent after it;
  those it could not hold it leaves in the stream and the replay reads on past them;
  held ones the replay overtook are not sent again.

The property test (``tests/gateway/test_cursors.py``) drives this unit through any
interleaving of publishes, feed pushes, replay steps, resumes, slow clients and reconnects.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from mumu.gateway.ranges import CursorRanges

REPLAY_PASSES = 8
"""Replays of one resume chasing live events it could not hold; then the client is
too slow for the stream and is closed."""


class HasCursor(Protocol):
    @property
    def cursor(self) -> int: ...


E = TypeVar("E", bound=HasCursor)


class SocketCursors(Generic[E]):
    """What one socket has sent, as cursors and ranges of cursors."""

    def __init__(self, hold_limit: int) -> None:
        self.hold_limit = hold_limit
        self.cursor = 0
        """The highest cursor this client has: the last event delivered to it, or the
        ``after`` it resumed from (0: none yet)."""
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
        self._held: list[E] | None = None
        """While a replay runs: live events kept to send after it."""
        self._live_done = 0
        """While a replay runs: ``(live_from, live_done]`` went out live before it."""
        self.covered = 0
        """While a replay runs: the cursor up to which the client has every event."""
        self._skipped = 0
        """While a replay runs: the highest live event it must still read (not held)."""

    @property
    def replaying(self) -> bool:
        return self._held is not None

    @property
    def control_cursor(self) -> int:
        """The cursor of a control message: during a replay only what it covered is known
        to be complete."""
        return self.covered if self.replaying else self.cursor

    def go_live(self, position: int) -> None:
        """The feed has dispatched up to ``position``; later events are pushed here."""
        self.live_from = self._live_upto = position

    def live(self, event: E) -> bool:
        """A live event of the session, in stream order: True when it is to be sent now
        (it is held during a replay, skipped when the client has it)."""
        before, self._live_upto = self._live_upto, max(self._live_upto, event.cursor)
        if event.cursor <= self._claimed:  # the client has it: not sent, but not "sent live"
            self._unsent.add(before, event.cursor)
            return False
        if event.cursor in self._replayed:
            return False
        if self._held is not None:
            self._hold(event)
            return False
        return True

    def _hold(self, event: E) -> None:
        """Every live event is in the stream already, so one the replay went past was
        sent by it, and one the bounded hold cannot keep is left for the replay to read
        (it goes on until past ``_skipped``)."""
        assert self._held is not None
        if event.cursor <= self.covered:
            return
        if len(self._held) < self.hold_limit:
            self._held.append(event)
        else:
            self._skipped = max(self._skipped, event.cursor)

    def sent(self, cursor: int) -> None:
        """The event at ``cursor`` went to the outbox."""
        self.cursor = max(self.cursor, cursor)

    def begin_resume(self, after: int) -> None:
        """A replay of the session's events after ``after`` starts."""
        self._claimed = max(self._claimed, after)
        self.cursor = max(self.cursor, after)
        self._live_done = self._live_upto
        self._held, self._skipped = [], 0
        self.covered = after

    def wanted(self, sequence: int) -> bool:
        """Whether the replay is to send the stream's event at ``sequence`` (if it is one
        of the session's): not when this socket sent it already."""
        live = self.live_from < sequence <= self._live_done and sequence not in self._unsent
        return not (live or sequence in self._replayed)

    def passed(self, sequence: int) -> None:
        """The replay read the stream up to ``sequence`` (and sent what it wanted)."""
        self.covered = sequence

    @property
    def caught_up(self) -> bool:
        """The replay has read past every live event it could not hold."""
        return self._skipped <= self.covered

    def end_resume(self, after: int, *, complete: bool) -> list[E]:
        """The replay ended. ``complete``: it read the stream to its end and past every
        event it could not hold; the held events to push again are returned. Otherwise
        (it failed, or the socket is closing) nothing is returned: the socket must close,
        and the client resumes from the last cursor it got, which has no gap before it."""
        self._replayed.add(after, self.covered)
        held, self._held = self._held or [], None
        self._skipped = 0
        return held if complete else []
