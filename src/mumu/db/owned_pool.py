"""The one helper for code that owns an application pool: opened once (eagerly or on first
use, never twice under concurrency), closed once, ``None`` when no database is configured.

The persist stage, the ingest stage's workspace gate and the gateway's API keys use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from mumu.db.pool import DatabaseNotConfiguredError, create_app_pool
from mumu.db.settings import DatabaseSettings

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[asyncpg.Pool]]


class OwnedPool:
    """An ``asyncpg`` pool with one owner; ``connect`` makes it (``None``: not configured)."""

    def __init__(self, connect: Connect | None) -> None:
        self._connect = connect
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def app(cls, database: DatabaseSettings, *, min_size: int | None = None,
            max_size: int | None = None) -> OwnedPool:
        """The application role's pool (``MUMU_DATABASE_URL``; unset: not configured)."""
        if database.url is None:
            return cls(None)

        async def connect() -> asyncpg.Pool:
            return await create_app_pool(database, min_size=min_size, max_size=max_size)

        return cls(connect)

    @property
    def configured(self) -> bool:
        return self._connect is not None

    async def open(self, *, tolerate: bool = False) -> None:
        """Connect now; ``tolerate``: a database that is down is logged, not raised (the
        pool connects on first use)."""
        if not self.configured:
            return
        try:
            await self.get()
        except Exception as exc:
            if not tolerate:
                raise
            log.warning("database not reachable at start-up: %r", exc)

    async def get(self) -> asyncpg.Pool:
        """The pool, connecting it on first use."""
        if self._connect is None:
            raise DatabaseNotConfiguredError("MUMU_DATABASE_URL is not set")
        async with self._lock:
            if self._pool is None:
                self._pool = await self._connect()
            return self._pool

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The pool if it is open."""
        return self._pool

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
