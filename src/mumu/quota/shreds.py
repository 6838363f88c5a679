"""A shredded workspace takes no new asks: what the gateway and the stages ask first.

``mumu keys shred <ws>`` destroys the workspace's data keys and marks it shredded in
``mumu.workspace_shreds`` until an operator re-enables it (``mumu keys reenable``). Persist
never stores its data again (``DataKeys.active`` refuses), but without this check its new
asks would still be transcribed and answered. ``ShredWatch.refuse`` reads the mark with the
application role (row-level security: the workspace's own row) and caches it
``ttl`` seconds per workspace (``MUMU_QUOTA__LIMITS_CACHE_SECONDS``): an ask is refused at
most that long after the shred, and a re-enable takes effect as soon.

A database that cannot answer keeps the last state read (or "not shredded"): an outage of
PostgreSQL never blocks asks, and persist still refuses to store anything of a shredded
workspace.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from mumu.db.datakeys import WorkspaceShreddedError, shredded_at
from mumu.db.pool import workspace_tx
from mumu.quota.limits import Pool, is_uuid

log = logging.getLogger(__name__)
MAX_CACHED = 10_000


class ShredWatch:
    """Whether a workspace is shredded, per process (see the module doc)."""

    def __init__(self, pool: Pool | None, ttl: float) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, datetime | None]] = {}

    async def refuse(self, workspace_id: str) -> None:
        """``WorkspaceShreddedError`` when ``workspace_id`` is shredded."""
        when = await self.shredded_at(workspace_id)
        if when is not None:
            raise WorkspaceShreddedError(workspace_id, when)

    async def shredded_at(self, workspace_id: str) -> datetime | None:
        if self._pool is None or not is_uuid(workspace_id):
            return None  # workspaces are database rows: without one, none is shredded
        now = time.monotonic()
        cached = self._cache.get(workspace_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        when = await self._read(workspace_id, cached[1] if cached else None)
        self._remember(workspace_id, when, now + self._ttl)
        return when

    def _remember(self, workspace_id: str, when: datetime | None, until: float) -> None:
        if len(self._cache) >= MAX_CACHED and workspace_id not in self._cache:
            self._cache.clear()
        self._cache[workspace_id] = (until, when)

    async def _read(self, workspace_id: str, fallback: datetime | None) -> datetime | None:
        assert self._pool is not None
        try:
            async with workspace_tx(await self._pool(), workspace_id) as conn:
                return await shredded_at(conn, workspace_id)
        except Exception as exc:  # noqa: BLE001 - an outage keeps the last known state
            log.warning("reading whether %s is shredded failed (%r): using the last known",
                        workspace_id, exc)
            return fallback
