"""The workspace's longest audio on live streams (``MUMU_QUOTA__LONGEST_AUDIO``, or the
workspace's override in PostgreSQL: the limit an upload gets at ingest).

An upload over it is refused whole; a live stream cannot be, as its audio arrives while it
is spoken: it is cut at the limit, what was said up to there is final, and the stream
ends with a ``quota_exceeded`` error (``route.py``)."""

from __future__ import annotations

import math

from mumu.db.owned_pool import OwnedPool
from mumu.quota.limits import LimitsSource
from mumu.settings import Settings


class LiveLimits:
    """Longest audio per workspace, with the database pool the overrides are read with
    (owned here; ``None``: every workspace has the default)."""

    def __init__(self, source: LimitsSource | None, pool: OwnedPool | None = None) -> None:
        self._source = source
        self._pool = pool

    @classmethod
    def of(cls, settings: Settings) -> LiveLimits:
        if not settings.quota.enabled:
            return cls(None)
        pool = OwnedPool.app(settings.database, min_size=1, max_size=1,
                             owner="the transcribe stage's live limits")
        return cls(LimitsSource(settings.quota, pool.get if pool.configured else None), pool)

    async def longest_audio(self, workspace_id: str) -> float:
        """Seconds one live stream of the workspace may last (inf: no limit)."""
        if self._source is None:
            return math.inf
        return (await self._source.get(workspace_id)).longest_audio

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
