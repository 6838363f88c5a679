"""Where selected messages go without being published: counted (``--dry-run``) or
written to a JSON-lines file (``--to-file``)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mumu.ops.selection import from_ns

SAMPLE_BODY = 300
"""Characters of a sample's body shown by ``--dry-run``."""


def iso(ns: int) -> str:
    return from_ns(ns).isoformat(timespec="microseconds")


def preview(data: bytes, limit: int = SAMPLE_BODY) -> str:
    """A readable start of a body: text as is, binary as its size."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes of binary data>"
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass
class SubjectStats:
    count: int
    first_seq: int
    first_ts: int
    last_seq: int
    last_ts: int

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "first_seq": self.first_seq, "first_time": iso(self.first_ts),
                "last_seq": self.last_seq, "last_time": iso(self.last_ts)}


@dataclass
class DryRun:
    """Counts per subject, first and last sequence and time, and the first ``sample``."""

    sample_size: int = 3
    stream: str = ""
    subjects: dict[str, SubjectStats] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def put(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
            ts: int) -> None:
        stats = self.subjects.get(subject)
        if stats is None:
            self.subjects[subject] = SubjectStats(1, seq, ts, seq, ts)
        else:
            stats.count += 1
            stats.last_seq = seq
            stats.last_ts = ts
        if len(self.samples) < self.sample_size:
            self.samples.append({"stream": self.stream, "seq": seq, "time": iso(ts),
                                 "subject": subject, "headers": dict(headers or {}),
                                 "data": preview(data)})

    @property
    def count(self) -> int:
        return sum(s.count for s in self.subjects.values())

    def summary(self) -> dict[str, Any]:
        return {"subjects": {k: v.as_dict() for k, v in sorted(self.subjects.items())},
                "sample": self.samples}


def record(subject: str, data: bytes, headers: dict[str, str] | None, *, stream: str, seq: int,
           ts: int) -> dict[str, Any]:
    """One line of a ``--to-file`` export."""
    return {"stream": stream, "seq": seq, "time": iso(ts), "subject": subject,
            "headers": dict(headers or {}), "data": base64.b64encode(data).decode()}


@dataclass
class ToFile:
    """Appends each message as one JSON line; lines are written off the event loop in
    chunks, and ``flush`` makes what was handed over durable (a checkpoint follows it)."""

    path: Path
    stream: str = ""
    written: int = 0
    chunk: int = 2048
    _out: IO[str] | None = None
    _lines: list[str] = field(default_factory=list)

    def open(self, *, append: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.path.open("a" if append else "w", encoding="utf-8")

    async def put(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
                  ts: int) -> None:
        line = record(subject, data, headers, stream=self.stream, seq=seq, ts=ts)
        self._lines.append(json.dumps(line, separators=(",", ":")))
        self.written += 1
        if len(self._lines) >= self.chunk:
            await self.flush()

    async def flush(self) -> None:
        out = self._out
        assert out is not None, "open() first"
        lines, self._lines = self._lines, []

        def write() -> None:
            if lines:
                out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())

        await asyncio.to_thread(write)

    async def close(self) -> None:
        if self._out is not None:
            await self.flush()
            await asyncio.to_thread(self._out.close)
            self._out = None
