"""What `mumu bench live` measures with: the events of each request as they arrive, a
player that sends audio at real-time pace and remembers when each stream position went
out, word error rate, and percentiles."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mumu.bench.live_driver import LiveStreamHandle

SAMPLE_RATE = 16_000


@dataclass
class Arrived:
    kind: str
    body: dict[str, Any]
    at: float


@dataclass
class Recorder:
    """Every event of the workspace by request id (``on_event`` of a ``LiveDriver``)."""

    by_request: dict[str, list[Arrived]] = field(default_factory=lambda: defaultdict(list))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, kind: str, body: dict[str, Any], at: float) -> None:
        rid = body.get("request_id")
        if isinstance(rid, str):
            self.by_request[rid].append(Arrived(kind, body, at))
            self._changed.set()

    def first(self, rid: str, kind: str) -> Arrived | None:
        return next((e for e in self.by_request.get(rid, []) if e.kind == kind), None)

    def all(self, rid: str, kind: str) -> list[Arrived]:
        return [e for e in self.by_request.get(rid, []) if e.kind == kind]

    async def wait(self, check: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Played:
    """When each stream position (seconds of audio) was sent."""

    positions: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)

    def sent_at(self, position: float) -> float:
        """Wall time (monotonic) the audio at ``position`` was sent."""
        for pos, at in zip(self.positions, self.sent, strict=True):
            if pos >= position:
                return at
        return self.sent[-1]


def audible_end(audio: np.ndarray, below_peak_db: float = 40.0) -> float:
    """Seconds to the end of the last 10 ms window whose loudness is within
    ``below_peak_db`` of the clip's loudest: where speech ends in a clean clip. Whisper's
    word times are not used for this: its last word ends 0.1-0.26 s before the sound
    does on the held-out clips (docs/audio.md, "Hands-free latency")."""
    window = SAMPLE_RATE // 100
    frames = audio[:audio.size // window * window].reshape(-1, window)
    loudness = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    if not loudness.size or loudness.max() == 0:
        return 0.0
    loud = np.nonzero(loudness >= loudness.max() * 10 ** (-below_peak_db / 20))[0]
    return float((loud[-1] + 1) * window / SAMPLE_RATE)


def pcm16(samples: np.ndarray) -> bytes:
    data: bytes = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return data


async def play(stream: LiveStreamHandle, audio: np.ndarray, *, chunk: float = 0.1,
               end: bool = True, played: Played | None = None,
               stop: asyncio.Event | None = None) -> Played:
    """Send ``audio`` at real-time pace in ``chunk``-second pieces (scheduled on the
    clock, so slow sends do not drift); ``end``: the last piece ends the stream (also
    when ``stop`` is set: the piece then sent is the last)."""
    played = played or Played()
    step = int(chunk * SAMPLE_RATE)
    base = played.positions[-1] if played.positions else 0.0
    pieces = [audio[i:i + step] for i in range(0, audio.size, step)]
    t0 = time.monotonic()
    for n, piece in enumerate(pieces):
        due = t0 + (n + 1) * chunk  # a piece can be sent once it has been spoken
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        stopping = stop is not None and stop.is_set()
        if stopping or (end and n == len(pieces) - 1):
            await stream.end(pcm16(piece))
        else:
            await stream.send(pcm16(piece))
        played.positions.append(base + (n * step + piece.size) / SAMPLE_RATE)
        played.sent.append(time.monotonic())
        if stopping:
            break
    return played


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, w in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != w))
    return row[len(hyp)], len(ref)


def wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate (percent) over (reference, hypothesis) pairs."""
    errors = [word_errors(r, h) for r, h in pairs]
    total = sum(n for _, n in errors)
    return round(100 * sum(e for e, _ in errors) / max(total, 1), 2)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> dict[str, Any]:
    """p50 / p90 / max in milliseconds, and how many."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    return {"n": len(values), "p50": round(statistics.median(values) * 1000, 1),
            "p90": round((pct(values, 0.9) or 0.0) * 1000, 1),
            "max": round(max(values) * 1000, 1)}


def commit_latencies(rec: Recorder, rid: str, played: Played) -> list[float]:
    """Seconds from when each word of the final was spoken (its end was sent) to when it
    was first committed: in a partial's ``committed`` text, or by the final itself."""
    final = rec.first(rid, "final")
    if final is None:
        return []
    timed = [w for s in final.body.get("segments", []) for w in (s.get("words") or [])]
    partials = rec.all(rid, "partial")
    out: list[float] = []
    for index, word in enumerate(timed):
        committed_at = next((p.at for p in partials
                             if len(words(p.body.get("committed") or "")) > index), final.at)
        out.append(max(0.0, committed_at - played.sent_at(float(word["end"]))))
    return out
