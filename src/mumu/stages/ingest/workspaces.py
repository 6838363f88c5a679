"""The optional ``unknown_workspace`` check: only when ``database_url`` is set.

The query belongs to the persistence layer (``mumu.db.workspaces.workspace_exists``);
this gate owns the application pool and remembers workspaces it has seen for a while,
so a burst of audio costs one lookup. Without a database every workspace is accepted.
"""

from __future__ import annotations

import logging
import time

from mumu.db.owned_pool import OwnedPool
from mumu.db.pool import UNAVAILABLE
from mumu.db.workspaces import workspace_exists
from mumu.runtime import PermanentError, TransientError

log = logging.getLogger(__name__)


class WorkspaceGate:
    """Says whether a workspace exists (``PermanentError("unknown_workspace")`` if not)."""

    def __init__(self, pool: OwnedPool, cache_seconds: float) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._seen: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._pool.configured

    async def open(self) -> None:
        if not self.enabled:
            log.info("no database_url: ingest accepts every workspace", extra={"stage": "ingest"})
            return
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def check(self, workspace_id: str) -> None:
        """Raise ``unknown_workspace`` (permanent), or a transient error if the database is down."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._seen.get(workspace_id, 0.0) > now:
            return
        try:
            found = await workspace_exists(await self._pool.get(), workspace_id)
        except UNAVAILABLE as exc:
            raise TransientError("internal", f"workspace lookup failed: {exc!r}") from exc
        if not found:
            raise PermanentError("unknown_workspace", f"workspace {workspace_id!r} does not exist")
        self._seen[workspace_id] = now + self._ttl
