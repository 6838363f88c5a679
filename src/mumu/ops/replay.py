"""``mumu replay``: read the selected messages once, then count them, export them, or
publish them again (to their subject, or to one stage only).

Stages are idempotent (deterministic output ids, upserts on ``event_id``), so a replay
recomputes without duplicating what was already produced inside the duplicate window,
and rewrites stored rows in place. ``--to-stage`` publishes on the stage's own replay
subject (``mumu.replay.<durable>.<ws>``), which no other consumer reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nats.aio.client import Client as NATS

from mumu.ops.filesource import read_export
from mumu.ops.plan import FILE_SOURCE, Plan
from mumu.ops.reader import streams_for
from mumu.ops.republish import Republisher
from mumu.ops.scan import ScanResult, scan, start_sequence
from mumu.ops.selection import is_stream_name
from mumu.ops.sinks import DryRun, ToFile


class Sink(Protocol):
    """Where a read hands its messages: counted, written, or published."""

    stream: str

    def put(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
            ts: int) -> Awaitable[None] | None: ...


OnRead = Callable[[str, int, ScanResult], None]
"""Told when a source starts: (its name, messages expected, the live counters)."""


@dataclass
class Outcome:
    """What a replay did (``--json`` prints ``summary()``)."""

    plan: Plan
    read: int = 0
    taken: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        p = self.plan
        return {
            "action": p.action, "replay_id": p.replay_id, "stage": p.stage,
            "selection": p.selection.as_dict(), "from_file": p.from_file,
            "out_file": p.out_file, "read": self.read, "selected": self.taken,
            "seconds": round(self.seconds, 3),
            "rate_per_s": round(self.taken / self.seconds, 1) if self.seconds else None,
            "interrupted": self.interrupted, "streams": self.streams, **self.detail,
        }


async def run(nc: NATS, plan: Plan, *, candidates: list[str], stop: asyncio.Event | None = None,
              on_read: OnRead | None = None) -> Outcome:
    """Carry out ``plan`` (resumed where its positions say); ``stop`` ends it early, after
    the message in hand, with every publish in flight acknowledged."""
    outcome = Outcome(plan)
    started = time.perf_counter()
    dry = DryRun(plan.sample) if plan.action == "dry-run" else None
    out = ToFile(Path(plan.out_file)) if plan.action == "to-file" and plan.out_file else None
    pub = (Republisher(nc, replay_id=plan.replay_id, stage=plan.stage, rate=plan.rate)
           if plan.action in ("to-stage", "republish") else None)
    if out is not None:
        out.open(append=bool(plan.positions))
    sink: Sink | None = dry or out or pub
    assert sink is not None, f"unknown action {plan.action!r}"
    try:
        if plan.from_file:
            await _from_file(plan, pub, outcome, stop, on_read)
        else:
            for stream in await streams_for(nc, plan.selection.target, candidates):
                if stream in plan.finished:
                    continue
                await _read_stream(nc, plan, stream, sink, outcome, stop=stop, on_read=on_read)
                if outcome.interrupted:
                    break
    finally:
        if out is not None:
            await out.close()
    outcome.seconds = time.perf_counter() - started
    if dry is not None:
        outcome.detail.update(dry.summary())
    if out is not None:
        outcome.detail["written"] = out.written
    if pub is not None:
        outcome.detail["published"] = pub.published
        outcome.detail["not_stage_inputs"] = pub.not_inputs
        outcome.detail["max_in_flight"] = pub.max_in_flight
    return outcome


async def _read_stream(nc: NATS, plan: Plan, stream: str, sink: Sink, outcome: Outcome, *,
                       stop: asyncio.Event | None, on_read: OnRead | None) -> None:
    start = plan.positions.get(stream) or await start_sequence(nc, stream, plan.selection)
    sink.stream = stream
    progress = ScanResult(last_seq=start - 1, read=0, taken=0, complete=True)

    def started(total: int) -> None:
        if on_read is not None:
            on_read(stream, total, progress)

    if isinstance(sink, Republisher):
        sink.acked_through = start - 1
    narrower = None
    if isinstance(sink, Republisher) and sink.stage and is_stream_name(plan.selection.target):
        narrower = sink.input_filters(plan.selection.workspace)
    try:
        result = await scan(nc, stream, plan.selection, sink.put, start=start, stop=stop,
                            result=progress, on_total=started, filters=narrower)
    finally:
        # resume after what is safely done: written, or acknowledged by JetStream
        last = progress.last_seq
        try:
            if isinstance(sink, Republisher):
                await sink.finish()
            elif isinstance(sink, ToFile):
                await sink.flush()
        finally:
            if isinstance(sink, Republisher):
                last = min(last, sink.acked_through)
            plan.positions[stream] = last + 1
    outcome.read += result.read
    outcome.taken += result.taken
    outcome.streams[stream] = {"from_seq": start, "last_seq": result.last_seq,
                               "read": result.read, "selected": result.taken}
    if result.complete:
        plan.finished.append(stream)
    else:
        outcome.interrupted = True


async def _from_file(plan: Plan, pub: Republisher | None, outcome: Outcome,
                     stop: asyncio.Event | None, on_read: OnRead | None) -> None:
    if pub is None:
        raise RuntimeError("--from-file publishes: give --to-stage NAME or nothing")
    path = Path(plan.from_file or "")
    start = plan.positions.get(FILE_SOURCE, 1)
    progress = ScanResult(last_seq=start - 1, read=0, taken=0, complete=True)
    if on_read is not None:
        on_read(str(path), 0, progress)
    pub.acked_through = start - 1
    try:
        async for line, rec in read_export(path, start):
            progress.read += 1
            if plan.selection.takes(rec.subject, rec.data, rec.headers, rec.seq, rec.ts):
                progress.taken += 1
                await pub.publish(rec.subject, rec.data, rec.headers, stream=rec.stream,
                                  seq=rec.seq, position=line)
            progress.last_seq = line
            if stop is not None and stop.is_set():
                outcome.interrupted = True
                break
    finally:
        try:
            await pub.finish()
        finally:
            plan.positions[FILE_SOURCE] = min(progress.last_seq, pub.acked_through) + 1
    outcome.read += progress.read
    outcome.taken += progress.taken
    if not outcome.interrupted:
        plan.finished.append(FILE_SOURCE)
