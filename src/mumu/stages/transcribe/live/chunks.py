"""A live stream's chunks in sequence order, whatever order JetStream stored them in.

A producer that reconnects re-sends chunks (duplicates) and may store a chunk after a
later one (a gap that fills late). ``ChunkOrder`` hands chunks on in ``Mumu-Chunk-Seq``
order: a repeat is dropped by its number; a chunk that arrives past a gap waits, up to
``gap_wait`` seconds, for the missing ones; after that the gap is given up (logged and
counted by the route) and the stream continues with the chunks after it, and a missing
chunk that turns up later is dropped as late.

The wait is measured on JetStream's stored timestamps, not on this replica's clock: the
gap is given up when a chunk stored more than ``gap_wait`` after the one that opened it
arrives (or, live, when nothing arrives for that long: ``deadline``). So a replica that
replays the stream after a takeover gives up the same gaps and drops the same late
chunks, and its finals repeat the first replica's.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chunk:
    seq: int
    data: bytes
    end: bool
    """The producer's last chunk (``Mumu-Stream-End: true``)."""
    stored: float
    """When JetStream stored it (seconds since the epoch)."""


@dataclass(frozen=True)
class Gap:
    """Chunks ``first``..``last`` never came in time and were skipped."""

    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass
class ChunkOrder:
    gap_wait: float
    max_ahead: int = 2_000
    """Chunks held past a gap at most; one more gives the gap up at once (memory bound)."""
    next: int = 1
    """The sequence number handed on next."""
    duplicates: int = 0
    late: int = 0
    """Chunks of a gap already given up (dropped, like duplicates)."""
    gaps: list[Gap] = field(default_factory=list)
    _ahead: dict[int, Chunk] = field(default_factory=dict)
    _gap_opened: float | None = None
    """Stored time of the chunk that found the gap open."""

    @property
    def waiting(self) -> bool:
        """Chunks are held until a missing one comes (or the gap is given up)."""
        return bool(self._ahead)

    def deadline(self) -> float | None:
        """Stored time after which the open gap is given up (None: no gap)."""
        return None if self._gap_opened is None else self._gap_opened + self.gap_wait

    def add(self, chunk: Chunk) -> list[Chunk]:
        """Take one stored chunk: the chunks now ready, in order."""
        ready: list[Chunk] = []
        deadline = self.deadline()
        if deadline is not None and chunk.stored > deadline:
            ready += self.give_up()
        if chunk.seq < self.next or chunk.seq in self._ahead:
            if any(chunk.seq in range(g.first, g.last + 1) for g in self.gaps[-8:]):
                self.late += 1
            else:
                self.duplicates += 1
            return ready
        self._ahead[chunk.seq] = chunk
        ready += self._release()
        if self._ahead and self._gap_opened is None:
            self._gap_opened = chunk.stored
        if len(self._ahead) > self.max_ahead:
            ready += self.give_up()
        return ready

    def give_up(self) -> list[Chunk]:
        """Skip the open gap: the held chunks after it, in order."""
        if not self._ahead:
            return []
        first_held = min(self._ahead)
        self.gaps.append(Gap(self.next, first_held - 1))
        self.next = first_held
        return self._release()

    def _release(self) -> list[Chunk]:
        out: list[Chunk] = []
        while self.next in self._ahead:
            out.append(self._ahead.pop(self.next))
            self.next += 1
        if not self._ahead:
            self._gap_opened = None
        elif out:  # a new gap further on: its wait starts with the first chunk held now
            self._gap_opened = min(c.stored for c in self._ahead.values())
        return out
