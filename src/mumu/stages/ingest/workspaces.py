"""The optional ``unknown_workspace`` check: only when ``database_url`` is set.

The query belongs to the persistence layer (``mumu.db.workspaces.workspace_exists``);
this gate owns the application pool and remembers workspaces it has seen for a while,
so a burst of audio costs one lookup. Without a database every workspace is accepted.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from mumu.db.pool import UNAVAILABLE, create_app_pool
from mumu.db.workspaces import workspace_exists
from mumu.runtime import PermanentError, TransientError
from mumu.settings import Settings

log = logging.getLogger(__name__)


class WorkspaceGate:
    """Says whether a workspace exists (``PermanentError("unknown_workspace")`` if not)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ttl = settings.ingest.workspace_cache_seconds
        self._pool: asyncpg.Pool | None = None
        self._seen: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._settings.database_url is not None

    async def open(self) -> None:
        if not self.enabled:
            log.info("no database_url: ingest accepts every workspace", extra={"stage": "ingest"})
            return
        self._pool = await create_app_pool(self._settings.database, min_size=1, max_size=4)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def check(self, workspace_id: str) -> None:
        """Raise ``unknown_workspace`` (permanent), or a transient error if the database is down."""
        if self._pool is None:
            return
        now = time.monotonic()
        if self._seen.get(workspace_id, 0.0) > now:
            return
        try:
            found = await workspace_exists(self._pool, workspace_id)
        except UNAVAILABLE as exc:
            raise TransientError("internal", f"workspace lookup failed: {exc!r}") from exc
        if not found:
            raise PermanentError("unknown_workspace", f"workspace {workspace_id!r} does not exist")
        self._seen[workspace_id] = now + self._ttl
