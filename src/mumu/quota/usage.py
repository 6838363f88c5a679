"""Usage counters of every workspace, shared by every gateway replica and stage.

They live in the JetStream KV bucket ``mumu-quota``, one small JSON document per
workspace and purpose, changed only by compare-and-set (``update(last=revision)``): two
processes admitting asks of one workspace at the same moment cannot both take its last
token or its last in-flight slot; the loser reads again and decides again.

* ``<ws>.flow``: the ask token bucket (``tokens`` at ``at``, wall clock) and the requests
  in flight (request id → accepted at). Admitting a request id that is already in flight
  costs nothing, so an ask the gateway admitted is not charged again by the stage that
  consumes it, and a redelivery is not charged twice. ``recent``: the last request ids
  that took a token without a slot of their own (the utterances of a live stream, which
  holds the slot: ``take_ask``), so a redelivery of one is free too.
* ``<ws>.audio.<YYYYMMDD>``: seconds of audio decoded on that UTC day, and the last
  request ids charged (a redelivery is not charged twice). The bucket's max age drops
  old days.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from mumu.quota.bucket import TokenBucket
from mumu.quota.errors import QuotaExceededError
from mumu.quota.limits import Limits

CAS_ATTEMPTS: Final = 50
RECENT_AUDIO: Final = 64
"""Request ids remembered per day document (a redelivery of one of these is free)."""
RECENT_ASKS: Final = 64
"""Request ids that took a token without a slot, remembered (a redelivery is free)."""


class QuotaStoreError(RuntimeError):
    """The usage store could not be read or written (NATS down, endless contention)."""


@dataclass
class Flow:
    """The ask bucket and the in-flight requests of one workspace."""

    tokens: float | None = None
    """``None``: never used, the bucket is full."""
    at: float = 0.0
    inflight: dict[str, float] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)
    """Request ids that took a token without a slot (``UsageStore.take_ask``)."""

    @classmethod
    def load(cls, raw: bytes | None) -> Flow:
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        return cls(data.get("tokens"), float(data.get("at", 0.0)),
                   {str(k): float(v) for k, v in (data.get("inflight") or {}).items()},
                   [str(r) for r in data.get("recent") or []])

    def dump(self) -> bytes:
        return json.dumps({"tokens": self.tokens, "at": self.at,
                           "inflight": self.inflight, "recent": self.recent}).encode()

    def live(self, now: float, timeout: float) -> dict[str, float]:
        """The in-flight requests not older than ``timeout`` (a lost end stops counting)."""
        return {rid: t for rid, t in self.inflight.items() if now - t < timeout}

    def tokens_at(self, bucket: TokenBucket, now: float) -> float:
        if self.tokens is None:
            return bucket.burst
        return bucket.refill(self.tokens, self.at, now)


@dataclass
class AudioDay:
    seconds: float = 0.0
    recent: list[str] = field(default_factory=list)
    longest: float = 0.0

    @classmethod
    def load(cls, raw: bytes | None) -> AudioDay:
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        return cls(float(data.get("seconds", 0.0)), [str(r) for r in data.get("recent", [])],
                   float(data.get("longest", 0.0)))

    def dump(self) -> bytes:
        return json.dumps({"seconds": self.seconds, "recent": self.recent,
                           "longest": self.longest}).encode()


def ask_bucket(limits: Limits) -> TokenBucket:
    """``asks_per_minute`` tokens at most, refilled at that rate."""
    return TokenBucket(rate=limits.asks_per_minute / 60.0, burst=limits.asks_per_minute)


def ask_token(flow: Flow, bucket: TokenBucket, limits: Limits, now: float) -> float:
    """The workspace's ask tokens at ``now``, at least one (the caller takes one), or
    ``QuotaExceededError``."""
    tokens = flow.tokens_at(bucket, now)
    if tokens < 1.0:
        raise QuotaExceededError(
            "asks_per_minute",
            f"this workspace's ask quota ({limits.asks_per_minute:g} per minute) "
            f"is spent; retry in {bucket.wait(tokens)} s",
            retry_after=bucket.wait(tokens))
    return tokens


def day_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


def seconds_to_midnight(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


class UsageStore:
    """Reads and changes the usage documents of ``mumu-quota`` (see the module doc)."""

    def __init__(self, kv: KeyValue, inflight_timeout: float) -> None:
        self._kv = kv
        self.inflight_timeout = inflight_timeout

    async def _read(self, key: str) -> tuple[bytes | None, int]:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise QuotaStoreError(f"reading {key}: {exc!r}") from exc
        return entry.value, int(entry.revision or 0)

    async def _change(self, key: str, change: Callable[[bytes | None], bytes | None]) -> None:
        """Compare-and-set loop: ``change`` maps the current value to the new one (``None``:
        nothing to write) and may raise ``QuotaExceededError``, which ends the loop."""
        for _ in range(CAS_ATTEMPTS):
            raw, revision = await self._read(key)
            new = change(raw)
            if new is None:
                return
            try:
                await self._kv.update(key, new, last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else changed it meanwhile: decide again
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise QuotaStoreError(f"writing {key}: {exc!r}") from exc
        raise QuotaStoreError(f"{key}: still contended after {CAS_ATTEMPTS} attempts")

    async def flow(self, workspace_id: str) -> Flow:
        raw, _ = await self._read(f"{workspace_id}.flow")
        return Flow.load(raw)

    async def audio_day(self, workspace_id: str, now: float) -> AudioDay:
        raw, _ = await self._read(f"{workspace_id}.audio.{day_of(now)}")
        return AudioDay.load(raw)

    async def admit(self, workspace_id: str, request_id: str, limits: Limits,
                    now: float) -> bool:
        """Count ``request_id`` in flight and take one ask token, or raise
        ``QuotaExceededError`` (nothing changes); free when it is in flight already.
        True when this call admitted it (False: it was in flight)."""
        bucket = ask_bucket(limits)
        admitted = False

        def change(raw: bytes | None) -> bytes | None:
            nonlocal admitted
            flow = Flow.load(raw)
            inflight = flow.live(now, self.inflight_timeout)
            admitted = request_id not in inflight
            if not admitted:
                return None
            if len(inflight) >= limits.concurrent_requests:
                oldest = min(inflight.values(), default=now)
                raise QuotaExceededError(
                    "concurrent_requests",
                    f"{len(inflight)} requests of this workspace are in flight (limit "
                    f"{limits.concurrent_requests:g}); retry when one has finished",
                    retry_after=min(5.0, self.inflight_timeout - (now - oldest)))
            tokens = ask_token(flow, bucket, limits, now)
            inflight[request_id] = now
            return Flow(tokens - 1.0, now, inflight, flow.recent).dump()

        await self._change(f"{workspace_id}.flow", change)
        return admitted

    async def take_ask(self, workspace_id: str, request_id: str, limits: Limits,
                       now: float) -> bool:
        """Take one ask token for ``request_id`` without a slot in flight (an utterance of
        a live stream, whose stream holds the slot), or raise ``QuotaExceededError``
        (nothing changes); free when it took one already. True when this call took it."""
        bucket = ask_bucket(limits)
        taken = False

        def change(raw: bytes | None) -> bytes | None:
            nonlocal taken
            flow = Flow.load(raw)
            taken = request_id not in flow.recent and request_id not in flow.inflight
            if not taken:
                return None
            tokens = ask_token(flow, bucket, limits, now)
            recent = [*flow.recent, request_id][-RECENT_ASKS:]
            return Flow(tokens - 1.0, now, flow.inflight, recent).dump()

        await self._change(f"{workspace_id}.flow", change)
        return taken

    async def hold(self, workspace_id: str, request_id: str, now: float) -> bool:
        """``request_id`` is still running (a live stream whose audio flows): it counts in
        flight from ``now`` again, so a request longer than ``inflight_timeout`` keeps its
        slot. Nothing when it is not in flight (ended, or expired). True if it was."""
        held = False

        def change(raw: bytes | None) -> bytes | None:
            nonlocal held
            flow = Flow.load(raw)
            held = request_id in flow.live(now, self.inflight_timeout)
            if not held:
                return None
            inflight = flow.live(now, self.inflight_timeout)
            inflight[request_id] = now
            return Flow(flow.tokens, flow.at, inflight, flow.recent).dump()

        await self._change(f"{workspace_id}.flow", change)
        return held

    async def release(self, workspace_id: str, request_id: str, now: float) -> bool:
        """The request ended: it no longer counts in flight. True if it did."""
        released = False

        def change(raw: bytes | None) -> bytes | None:
            nonlocal released
            flow = Flow.load(raw)
            if request_id not in flow.inflight:
                return None
            inflight = flow.live(now, self.inflight_timeout)
            inflight.pop(request_id, None)
            released = True
            return Flow(flow.tokens, flow.at, inflight, flow.recent).dump()

        await self._change(f"{workspace_id}.flow", change)
        return released

    async def charge_audio(self, workspace_id: str, request_id: str, seconds: float,
                           limits: Limits, now: float) -> None:
        """Add ``seconds`` to today's audio, or raise ``QuotaExceededError`` when that would
        pass ``audio_seconds_per_day`` (nothing is added); free for a request id charged
        already today."""
        limit = limits.audio_seconds_per_day

        def change(raw: bytes | None) -> bytes | None:
            day = AudioDay.load(raw)
            if request_id in day.recent:
                return None
            if day.seconds + seconds > limit:
                raise QuotaExceededError(
                    "audio_seconds_per_day",
                    f"this audio ({seconds:.1f} s) would pass the workspace's audio quota "
                    f"({day.seconds:.1f} of {limit:g} s used today, UTC)",
                    retry_after=seconds_to_midnight(now))
            recent = [*day.recent, request_id][-RECENT_AUDIO:]
            return AudioDay(day.seconds + seconds, recent, max(day.longest, seconds)).dump()

        await self._change(f"{workspace_id}.audio.{day_of(now)}", change)
