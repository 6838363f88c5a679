"""Protection: per-workspace rate limits (429) and backpressure on stage lag (503)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from mumu.gateway.errors import ApiError
from mumu.quota.bucket import TokenBucket
from mumu.stages.registry import STAGES

log = logging.getLogger("mumu.gateway.limits")

WATCHED_STREAMS = STAGES.streams()
"""The streams the stages consume (from the stage registry)."""
MAX_TRACKED = 10_000


class RateLimiter:
    """A token bucket per key, a workspace or a client address (this process; each
    replica enforces its own share)."""

    def __init__(self, per_second: float, burst: int, what: str = "workspace rate limit"
                 ) -> None:
        self.rate = per_second
        self.burst = float(burst)
        self._bucket = TokenBucket(per_second, float(burst))
        """The arithmetic, shared with the workspace ask quota (``mumu.quota``)."""
        self.what = what
        """What is limited, for the 429's message."""
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket or raise a 429 saying when to retry."""
        now = time.monotonic() if now is None else now
        tokens = self.check(key, cost, now)
        self._spend(key, tokens - cost, now)

    def check(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """The tokens ``key`` has (at least ``cost``), spending none; else a 429."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = self._bucket.refill(tokens, last, now)
        if tokens < cost:
            retry = self._bucket.wait(tokens, cost)
            self._buckets[key] = (tokens, now)
            raise ApiError(
                429, "rate_limited",
                f"{self.what} ({self.rate:g}/s, burst {self.burst:g}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        return tokens

    def spend(self, key: str, cost: float = 1.0, now: float | None = None) -> None:
        """Spend what ``key`` has, down to empty, never raising (it already happened)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = self._bucket.refill(tokens, last, now)
        self._spend(key, max(0.0, tokens - cost), now)

    def _spend(self, key: str, left: float, now: float) -> None:
        self._buckets[key] = (left, now)
        if len(self._buckets) > MAX_TRACKED:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Buckets refilled to the brim carry no information; drop them."""
        full = [
            key for key, (tokens, last) in self._buckets.items()
            if self._bucket.refill(tokens, last, now) >= self.burst
        ]
        for key in full:
            del self._buckets[key]


class LagMonitor:
    """Looks at the stages' durable consumers; asks are refused while one lags too far."""

    def __init__(self, nc: NatsClient, threshold: int, interval: float) -> None:
        self._nc = nc
        self.threshold = threshold
        self.interval = interval
        self.reasons: list[str] = []
        self.lag: dict[str, int] = {}

    async def check_once(self) -> None:
        js = self._nc.jetstream()
        lag: dict[str, int] = {}
        for stream in WATCHED_STREAMS:
            try:
                consumers = await js.consumers_info(stream)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                continue
            for info in consumers:
                durable = info.config.durable_name
                if durable:  # ephemeral consumers are gateways and replays, not stages
                    lag[durable] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        self.lag = lag
        self.reasons = [
            f"stage consumer {name} is {pending} messages behind (limit {self.threshold})"
            for name, pending in sorted(lag.items()) if pending > self.threshold
        ]

    def guard(self) -> None:
        if self.reasons:
            raise ApiError(
                503, "overloaded", "; ".join(self.reasons), headers={"Retry-After": "5"}
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:
                log.exception("lag check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
