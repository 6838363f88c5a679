"""The one helper for code that owns an application pool: opened once (eagerly or on first
use, never twice under concurrency), closed once, ``None`` when no database is configured.

The persist stage, the ingest stage's workspace gate and the gateway's API keys use it.
Before the pool is first handed out, its role is checked (``role_guard``): a role that
row-level security does not bind is refused, at start when the database is reachable
then, else on first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from mumu.db.pool import DatabaseNotConfiguredError, create_app_pool
from mumu.db.role_guard import UnsafeRoleError, refuse_rls_bypass
from mumu.db.settings import DatabaseSettings

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[asyncpg.Pool]]


class OwnedPool:
    """An ``asyncpg`` pool with one owner; ``connect`` makes it (``None``: not configured)."""

    def __init__(self, connect: Connect | None, *, owner: str = "this process") -> None:
        self._connect = connect
        self._owner = owner
        self._pool: asyncpg.Pool | None = None
        self._checked = False
        self._lock = asyncio.Lock()

    @classmethod
    def app(cls, database: DatabaseSettings, *, min_size: int | None = None,
            max_size: int | None = None, owner: str = "this process") -> OwnedPool:
        """The application role's pool (``MUMU_DATABASE_URL``; unset: not configured);
        ``owner`` names the process in the refusal of an unsafe role."""
        if database.url is None:
            return cls(None, owner=owner)

        async def connect() -> asyncpg.Pool:
            return await create_app_pool(database, min_size=min_size, max_size=max_size)

        return cls(connect, owner=owner)

    @property
    def configured(self) -> bool:
        return self._connect is not None

    async def open(self, *, tolerate: bool = False) -> None:
        """Connect now and check the role; ``tolerate``: a database that is down is logged,
        not raised (the pool connects on first use); an unsafe role is always raised."""
        if not self.configured:
            return
        try:
            await self.get()
        except UnsafeRoleError:
            raise
        except Exception as exc:
            if not tolerate:
                raise
            log.warning("database not reachable at start-up: %r", exc)

    async def get(self) -> asyncpg.Pool:
        """The pool, connecting it on first use; ``UnsafeRoleError`` for a role that
        row-level security does not bind."""
        if self._connect is None:
            raise DatabaseNotConfiguredError("MUMU_DATABASE_URL is not set")
        if self._checked and self._pool is not None:
            return self._pool  # the hot path: no lock once checked
        async with self._lock:
            if self._pool is None:
                self._pool = await self._connect()
            if not self._checked:
                async with self._pool.acquire() as conn:
                    await refuse_rls_bypass(conn, self._owner)
                self._checked = True
            return self._pool

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The pool if it is open."""
        return self._pool

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool, self._checked = self._pool, None, False
        if pool is not None:
            await pool.close()
