"""A workspace's effective limits: the settings' defaults, overridden per workspace in
PostgreSQL, read by the application role and cached a few seconds."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Final

from mumu.db.pool import Db
from mumu.db.quotas import limit_overrides
from mumu.quota.settings import QuotaSettings

log = logging.getLogger(__name__)

LIMIT_NAMES: Final = (
    "asks_per_minute", "audio_seconds_per_day", "concurrent_requests", "longest_audio"
)
INTEGER_LIMITS: Final = frozenset({"asks_per_minute", "concurrent_requests"})
MAX_CACHED = 10_000
MAX_CONCURRENT = 10_000
"""The in-flight requests of a workspace are one KV document (about 60 bytes each) under
the bucket's 1 MiB value limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The four limits of one workspace, and which of them are overrides."""

    asks_per_minute: float
    audio_seconds_per_day: float
    concurrent_requests: float
    longest_audio: float
    overridden: frozenset[str] = frozenset()

    @classmethod
    def defaults(cls, settings: QuotaSettings) -> Limits:
        return cls(float(settings.asks_per_minute), float(settings.audio_seconds_per_day),
                   float(settings.concurrent_requests), float(settings.longest_audio))

    def with_overrides(self, overrides: Mapping[str, float]) -> Limits:
        known = {k: v for k, v in overrides.items() if k in LIMIT_NAMES}
        return replace(self, **known, overridden=frozenset(known))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in LIMIT_NAMES}


def parse_limit(name: str, text: str) -> float | None:
    """``name=text`` of the CLI: a value, or ``None`` for ``default`` (drop the override);
    ``ValueError`` naming what is wrong."""
    if name not in LIMIT_NAMES:
        raise ValueError(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
    if text == "default":
        return None
    value = int(text) if name in INTEGER_LIMITS else float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0 (got {text})")
    if name == "concurrent_requests" and value > MAX_CONCURRENT:
        raise ValueError(f"{name} is at most {MAX_CONCURRENT} (each request in flight is "
                         "an entry of one KV document)")
    return float(value)


Pool = Callable[[], Awaitable[Db]]
"""Hands out the database to read overrides with (the application pool, or the CLI's
owner connection)."""


class LimitsSource:
    """Effective limits per workspace. ``pool``: the application pool (``None``: no
    database, every workspace has the defaults). A database that cannot answer keeps the
    last limits read (or the defaults), so an outage never blocks asks."""

    def __init__(self, settings: QuotaSettings, pool: Pool | None) -> None:
        self._defaults = Limits.defaults(settings)
        self._pool = pool
        self._ttl = settings.limits_cache_seconds
        self._cache: dict[str, tuple[float, Limits]] = {}

    async def get(self, workspace_id: str) -> Limits:
        now = time.monotonic()
        cached = self._cache.get(workspace_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        limits = await self._read(workspace_id, cached[1] if cached else self._defaults)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[workspace_id] = (now + self._ttl, limits)
        return limits

    async def _read(self, workspace_id: str, fallback: Limits) -> Limits:
        if self._pool is None or not is_uuid(workspace_id):
            return self._defaults  # overrides are stored for database workspaces only
        try:
            overrides = await limit_overrides(await self._pool(), workspace_id)
        except Exception as exc:  # noqa: BLE001 - an outage keeps the last known limits
            log.warning("reading the limits of %s failed (%r): using the last known",
                        workspace_id, exc)
            return fallback
        return self._defaults.with_overrides(overrides)


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID (a workspace id the database can hold)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
