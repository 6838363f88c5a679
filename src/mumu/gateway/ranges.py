"""Sets of cursors kept as merged ranges ``(lo, hi]``: what a socket's replays sent, or the
live events it did not send, remembered without a per-event memory.

A range may include cursors of other sessions: a socket only ever asks about its own
session's events, and ranges of one socket's consecutive events merge into one.
"""

from __future__ import annotations


class CursorRanges:
    """Cursor ranges ``(lo, hi]``, merged as they are added."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def __contains__(self, cursor: int) -> bool:
        # asked for every event a socket gets: most sockets have no range at all
        return bool(self._ranges) and any(lo < cursor <= hi for lo, hi in self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def add(self, lo: int, hi: int) -> None:
        """Every cursor in ``(lo, hi]``."""
        if hi <= lo:
            return
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*self._ranges, (lo, hi)]):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._ranges = merged
