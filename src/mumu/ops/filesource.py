"""Reading a ``--to-file`` export back (``mumu replay --from-file``), off the event loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from mumu.ops.selection import to_ns

CHUNK = 2048
"""Lines read per trip to the worker thread."""


@dataclass(frozen=True, slots=True)
class Exported:
    stream: str
    seq: int
    ts: int
    subject: str
    headers: dict[str, str]
    data: bytes


def parse_line(line: str, number: int) -> Exported:
    try:
        rec = json.loads(line)
        return Exported(
            stream=str(rec.get("stream", "")), seq=int(rec["seq"]),
            ts=to_ns(datetime.fromisoformat(rec["time"])), subject=str(rec["subject"]),
            headers={str(k): str(v) for k, v in (rec.get("headers") or {}).items()},
            data=base64.b64decode(rec["data"], validate=True),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise RuntimeError(f"line {number} is not a replay export record: {exc}") from exc


async def read_export(path: Path, start: int = 1) -> AsyncIterator[tuple[int, Exported]]:
    """(line number, record) from line ``start`` (1-based) on; blank lines are skipped."""
    try:
        handle: IO[str] = await asyncio.to_thread(path.open, "r", encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(f"cannot read {path}: {exc}") from exc
    try:
        number = 0
        while True:
            lines = await asyncio.to_thread(_next_lines, handle, CHUNK)
            if not lines:
                return
            for line in lines:
                number += 1
                if number >= start and line.strip():
                    yield number, parse_line(line, number)
    finally:
        await asyncio.to_thread(handle.close)


def _next_lines(handle: IO[str], n: int) -> list[str]:
    lines = []
    for _ in range(n):
        line = handle.readline()
        if not line:
            break
        lines.append(line)
    return lines
