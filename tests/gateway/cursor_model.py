"""A model of what the gateway does around ``SocketCursors`` (``ClientSocket``, ``Outbox``,
``feed.replay``, the hub) and of a client that follows docs/gateway.md, for the property
test in ``test_cursors.py``.

The stream is a list of events of this session, of another session of the workspace and
of another workspace; the feed dispatches them in order; a replay reads the workspace's
events after its cursor until the stream's end; the outbox holds at most ``LIMIT`` unread
frames and a send past it closes the socket. The client keeps the highest cursor of every
message it got, resumes with it, and reconnects with ``?after=`` it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from mumu.gateway.cursors import REPLAY_PASSES, SocketCursors

LIMIT = 3
"""Unread frames a socket holds (and live events a replay holds): small, so both fill."""
ME, OTHER, FOREIGN = "me", "other", "foreign"
"""This session; another session of the workspace (a replay reads it); another workspace."""


@dataclass(frozen=True)
class Ev:
    cursor: int
    session: str


@dataclass
class Replay:
    after: int
    passes: int = 0
    put: Ev | None = None
    """An event waiting for room in the outbox (``await outbox.put``)."""
    then_ready: bool = False
    """A resume at connect: ``ready`` follows ``resumed``."""
    at_end: bool = False
    """The pass read the stream's last event; it has not returned yet (it deletes its
    consumer first: live events arrive meanwhile)."""


@dataclass
class Socket:
    cursors: SocketCursors[Ev]
    frames: deque[tuple[str, int]] = field(default_factory=deque)
    """Unread frames: ("event" | "control", cursor)."""
    closed: bool = False
    replay: Replay | None = None


class Model:
    def __init__(self, make: Callable[[int], SocketCursors[Ev]], *,
                 close_on_failure: bool = True) -> None:
        self.make = make
        self.close_on_failure = close_on_failure
        """False: what the gateway did before (an error, then the held events, and the
        socket stays open)."""
        self.stream: list[Ev] = []
        self.fed = 0
        """The feed's position: events up to it were dispatched."""
        self.received: list[int] = []
        self.highest = 0
        self.socket = self._connect()

    # --- the gateway ------------------------------------------------------------------

    def _connect(self) -> Socket:
        sock = Socket(self.make(LIMIT))
        sock.cursors.go_live(self.fed)  # then subscribed to the hub, in the same step
        sock.cursors.begin_resume(self.highest)  # ?after=<highest>
        sock.replay = Replay(self.highest, then_ready=True)
        return sock

    def _send(self, sock: Socket, kind: str, cursor: int) -> bool:
        if sock.closed:
            return True
        if len(sock.frames) >= LIMIT:
            return False
        sock.frames.append((kind, cursor))
        return True

    def _close(self, sock: Socket) -> None:
        sock.closed = True
        sock.frames.clear()  # Outbox.stop drops what it queued

    def _push(self, sock: Socket, ev: Ev) -> None:
        if not sock.cursors.live(ev) or sock.closed:
            return
        if self._send(sock, "event", ev.cursor):
            sock.cursors.sent(ev.cursor)
        else:
            self._close(sock)  # too slow: 1013

    def _control(self, sock: Socket) -> None:
        self._send(sock, "control", sock.cursors.control_cursor)  # a full queue drops it

    def _end_replay(self, sock: Socket, *, complete: bool) -> None:
        assert sock.replay is not None
        replay, sock.replay = sock.replay, None
        for ev in sock.cursors.end_resume(replay.after, complete=complete):
            self._push(sock, ev)
        if complete:
            self._control(sock)  # resumed
            if replay.then_ready:
                self._control(sock)  # ready

    # --- steps ------------------------------------------------------------------------

    def publish(self, kind: str) -> None:
        self.stream.append(Ev(len(self.stream) + 1, kind))

    def feed(self) -> None:
        if self.fed < len(self.stream):
            self.fed += 1
            ev = self.stream[self.fed - 1]
            if ev.session == ME and not self.socket.closed:
                self._push(self.socket, ev)

    def replay_step(self) -> None:
        sock, replay = self.socket, self.socket.replay
        if replay is None:
            return
        if sock.closed:  # the replay sees the stopped outbox and ends
            self._end_replay(sock, complete=False)
            return
        cursors = sock.cursors
        if replay.put is not None:  # waiting for room
            if self._send(sock, "event", replay.put.cursor):
                cursors.sent(replay.put.cursor)
                cursors.passed(replay.put.cursor)
                replay.put = None
            return
        nxt = next((ev for ev in self.stream[cursors.covered:] if ev.session != FOREIGN), None)
        if nxt is None and not replay.at_end:  # the pass read to the stream's end
            replay.at_end = True
            return
        if replay.at_end:  # the pass returns
            replay.at_end = False
            if cursors.caught_up:
                self._end_replay(sock, complete=True)
                return
            replay.passes += 1
            if replay.passes >= REPLAY_PASSES:
                self._close(sock)
                self._end_replay(sock, complete=False)
            return
        assert nxt is not None
        if nxt.session == ME and cursors.wanted(nxt.cursor):
            replay.put = nxt
            self.replay_step()
        else:
            cursors.passed(nxt.cursor)

    def replay_fails(self) -> None:
        sock = self.socket
        if sock.replay is not None and sock.replay.put is None:
            self._control(sock)  # error resume_failed
            if self.close_on_failure:
                self._close(sock)
                self._end_replay(sock, complete=False)
            else:
                self._end_replay(sock, complete=True)

    # --- the client -------------------------------------------------------------------

    def read(self) -> None:
        if self.socket.frames:
            kind, cursor = self.socket.frames.popleft()
            if kind == "event":
                self.received.append(cursor)
            self.highest = max(self.highest, cursor)

    def resume(self) -> None:
        sock = self.socket
        if not sock.closed and sock.replay is None:  # one at a time ("busy" otherwise)
            sock.cursors.begin_resume(self.highest)
            sock.replay = Replay(self.highest)

    def ping(self) -> None:
        if not self.socket.closed:
            self._control(self.socket)

    def reconnect(self) -> None:
        """The connection drops (unread frames are lost), or the server closed it."""
        self.socket.closed = True
        if self.socket.replay is not None:
            self.socket.replay.put = None
            self._end_replay(self.socket, complete=False)
        self.socket = self._connect()

    def _progress(self) -> tuple[object, ...]:
        replay = self.socket.replay
        where = None if replay is None else (replay.passes, replay.put, replay.after)
        return (self.fed, len(self.received), len(self.socket.frames), where,
                self.socket.cursors.covered, id(self.socket))

    def settle(self) -> None:
        """No more publishes: everything runs to the end (reconnecting after a close)."""
        for _ in range(10_000):
            if self.socket.closed:
                self.reconnect()
            before = self._progress()
            self.feed()
            self.replay_step()
            self.read()
            if self._progress() == before and not self.socket.closed:
                return
        raise AssertionError("the model did not settle")


STEPS = {
    "publish_me": lambda m: m.publish(ME),
    "publish_other": lambda m: m.publish(OTHER),
    "publish_foreign": lambda m: m.publish(FOREIGN),
    "feed": Model.feed,
    "replay": Model.replay_step,
    "replay_fails": Model.replay_fails,
    "read": Model.read,
    "resume": Model.resume,
    "ping": Model.ping,
    "reconnect": Model.reconnect,
}
def _steps(weights: dict[str, int], max_size: int) -> st.SearchStrategy[list[str]]:
    names = [name for name in sorted(STEPS) for _ in range(weights.get(name, 1))]
    return st.lists(st.sampled_from(names), max_size=max_size)


steps = st.one_of(
    # the feed lagging behind replays, and reconnects
    _steps({"publish_me": 3, "feed": 1, "read": 3, "replay": 3, "resume": 2, "reconnect": 2}, 40),
    # a busy feed: live events pile up during replays, past what a socket holds
    _steps({"publish_me": 3, "feed": 3, "read": 4, "replay": 3, "resume": 2}, 60),
)


def violation(make: Callable[[int], SocketCursors[Ev]], actions: list[str], *,
              close_on_failure: bool = True) -> str | None:
    """What went wrong for the client after ``actions`` and a settle (None: nothing)."""
    model = Model(make, close_on_failure=close_on_failure)
    for action in actions:
        STEPS[action](model)
    model.settle()
    mine = [ev.cursor for ev in model.stream if ev.session == ME]
    if len(set(model.received)) != len(model.received):
        return f"an event twice: {model.received}"
    if model.received != sorted(model.received):
        return f"out of order: {model.received}"
    if model.received != mine:
        return f"missing: got {model.received}, the session has {mine}"
    return None
