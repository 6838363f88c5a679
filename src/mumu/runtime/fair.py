"""Fair scheduling: fetched messages waiting for a slot, served round-robin by workspace.

A route fetches ahead of its free slots (``MUMU_STAGE__FETCH_AHEAD`` messages), so a
workspace's backlog does not hide another workspace's message behind it in the stream.
Each workspace (the subject's last token) has its own FIFO queue; the queues take turns,
one message each. A workspace with nothing waiting joins the end of the round, so a new
message of B waits behind at most one more message of A per free slot. Putting and
taking are O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """FIFO per key, round-robin across keys; ``size`` is the number of items waiting."""

    __slots__ = ("_queues", "_turns", "size")

    def __init__(self) -> None:
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # keys with items, the next to serve first
        self.size = 0

    def put(self, key: str, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque((item,))
            self._turns.append(key)
        else:
            queue.append(item)
        self.size += 1

    def take(self) -> T:
        """The next item in turn; ``IndexError`` when nothing waits."""
        key = self._turns.popleft()
        queue = self._queues[key]
        item = queue.popleft()
        if queue:
            self._turns.append(key)
        else:
            del self._queues[key]
        self.size -= 1
        return item

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
