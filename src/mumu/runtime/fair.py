"""Fair scheduling: fetched messages waiting for a slot, served round-robin by workspace.

A route fetches ahead of its free slots (``MUMU_STAGE__FETCH_AHEAD`` messages), so a
workspace's backlog does not hide another workspace's message behind it in the stream.
Each workspace (the subject's last token) has its own FIFO queue; the queues take turns,
one message each. A workspace that starts waiting goes to the front of the round when it
was served less recently than the workspace at the front (it has not had its turn since),
else to the end: a new message of B is the next one started, while a workspace whose
messages come one at a time cannot jump the round twice (each workspace passes a waiting
one at most once). Putting and taking are O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """FIFO per key, round-robin across keys; ``size`` is the number of items waiting."""

    __slots__ = ("_clock", "_queues", "_served", "_turns", "size")

    def __init__(self) -> None:
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # keys with items, the next to serve first
        self._served: dict[str, int] = {}  # key -> when it was last served (a counter)
        self._clock = 0
        self.size = 0

    def put(self, key: str, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque((item,))
            turns = self._turns
            served = self._served
            if turns and served.get(key, -1) < served.get(turns[0], -1):
                turns.appendleft(key)  # it has not had its turn since the front one had
            else:
                turns.append(key)
        else:
            queue.append(item)
        self.size += 1

    def take(self) -> T:
        """The next item in turn; ``IndexError`` when nothing waits."""
        key = self._turns.popleft()
        queue = self._queues[key]
        item = queue.popleft()
        self._clock += 1
        self._served[key] = self._clock
        if queue:
            self._turns.append(key)
        else:
            del self._queues[key]
            if len(self._served) > 2 * len(self._queues) + 1024:
                self._forget()
        self.size -= 1
        return item

    def _forget(self) -> None:
        """Drop the service times older than every waiting key's: such a key goes to the
        front when it comes back either way (as a key never served does)."""
        served = self._served
        oldest = min((served.get(k, -1) for k in self._turns), default=self._clock + 1)
        self._served = {k: t for k, t in served.items() if t >= oldest}

    def shed(self, count: int, keep: Callable[[T], bool]) -> list[T]:
        """Take up to ``count`` of the newest items, from the longest queues first (the
        workspaces with the most waiting), never one that ``keep`` says stays."""
        shed: list[T] = []
        for key in sorted(self._queues, key=lambda k: -len(self._queues[k])):
            queue = self._queues[key]
            while queue and len(shed) < count and not keep(queue[-1]):
                shed.append(queue.pop())
            if not queue:
                del self._queues[key]
        if shed:
            self.size -= len(shed)
            self._turns = deque(k for k in self._turns if k in self._queues)
        return shed

    def items(self) -> list[T]:
        """What waits, in no particular order (a copy: safe to await while iterating)."""
        return [item for queue in self._queues.values() for item in queue]

    def clear(self) -> list[T]:
        """Empty the queue; returns what waited."""
        waiting = self.items()
        self._queues.clear()
        self._turns.clear()
        self.size = 0
        return waiting
