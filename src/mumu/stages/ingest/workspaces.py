"""The optional ``unknown_workspace`` check: only when ``database_url`` is set.

The query itself belongs to the persistence layer (``mumu.db.workspaces.workspace_exists``);
this gate owns the connection pool and remembers workspaces it has seen for a while.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mumu.runtime import PermanentError, TransientError
from mumu.settings import Settings

log = logging.getLogger(__name__)

Exists = Callable[[Any, str], Awaitable[bool]]


class WorkspaceGate:
    """Says whether a workspace exists; without a database every workspace is accepted."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.database_url
        self._ttl = settings.ingest.workspace_cache_seconds
        self._pool: Any = None
        self._exists: Exists | None = None
        self._seen: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._url is not None

    async def open(self) -> None:
        if self._url is None:
            log.info("no database_url: ingest accepts every workspace", extra={"stage": "ingest"})
            return
        try:
            module = importlib.import_module("mumu.db.workspaces")
        except ImportError as exc:
            raise RuntimeError(
                "database_url is set but mumu.db.workspaces is not available in this build"
            ) from exc
        self._exists = module.workspace_exists
        import asyncpg  # type: ignore[import-untyped]

        self._pool = await asyncpg.create_pool(
            self._url.get_secret_value(), min_size=1, max_size=4
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def check(self, workspace_id: str) -> None:
        """Raise ``unknown_workspace`` (permanent) or a transient error if the database is down."""
        if self._exists is None:
            return
        now = time.monotonic()
        if self._seen.get(workspace_id, 0.0) > now:
            return
        try:
            found = await self._exists(self._pool, workspace_id)
        except (OSError, TimeoutError) as exc:
            raise TransientError("internal", f"workspace lookup failed: {exc!r}") from exc
        except Exception as exc:
            import asyncpg

            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                raise TransientError("internal", f"workspace lookup failed: {exc!r}") from exc
            raise
        if not found:
            raise PermanentError("unknown_workspace", f"workspace {workspace_id!r} does not exist")
        self._seen[workspace_id] = now + self._ttl
