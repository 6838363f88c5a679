"""The application pool and the one place that scopes a transaction to a workspace."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg

from mumu.db.settings import DatabaseSettings

log = logging.getLogger(__name__)

Db = asyncpg.Pool | asyncpg.Connection

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, socket gone, network unreachable
    TimeoutError,
    asyncpg.InterfaceError,  # connection closed underneath us, pool closing
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,  # a replica during fail-over
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
"""Exceptions that mean "the database is not available right now": retry later."""


class DatabaseNotConfiguredError(RuntimeError):
    """``MUMU_DATABASE_URL`` (or the admin URL) is not set."""


def app_dsn(database: DatabaseSettings) -> str:
    if database.url is None:
        raise DatabaseNotConfiguredError(
            "MUMU_DATABASE_URL is not set (the application role's PostgreSQL URL); "
            "`mumu up` sets it for you, standalone processes need it"
        )
    return database.url.get_secret_value()


async def create_app_pool(
    database: DatabaseSettings, *, min_size: int | None = None, max_size: int | None = None
) -> asyncpg.Pool:
    """A pool connected as the application role (``MUMU_DATABASE_URL``).

    The role is ``NOSUPERUSER NOBYPASSRLS``: every query sees only the workspace set by
    :func:`workspace_tx`.
    """
    pool = await asyncpg.create_pool(
        app_dsn(database),
        min_size=database.pool_min if min_size is None else min_size,
        max_size=database.pool_max if max_size is None else max_size,
        timeout=database.connect_timeout,
        command_timeout=database.command_timeout,
        server_settings={"application_name": "mumu"},
    )
    if pool is None:  # pragma: no cover - asyncpg types it optional
        raise RuntimeError("asyncpg returned no pool")
    return pool


def workspace_uuid(workspace_id: str) -> str:
    """The canonical UUID text of a workspace id; ``ValueError`` when it is not a UUID."""
    try:
        return str(uuid.UUID(workspace_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"workspace id {workspace_id!r} is not a UUID") from None


@asynccontextmanager
async def workspace_tx(db: Db, workspace_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction scoped to ``workspace_id`` by row-level security.

    THE one place that sets ``app.workspace_id`` (``set_config(..., true)``: local to the
    transaction, so a pooled connection never leaks it). ``db`` is the application pool
    or, for admin commands, a connection of the owner role.
    """
    ws = workspace_uuid(workspace_id)
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.workspace_id', $1, true)", ws)
            yield cast(asyncpg.Connection, conn)  # a pool's proxy acts as the connection
    else:
        async with db.transaction():
            await db.execute("SELECT set_config('app.workspace_id', $1, true)", ws)
            yield db
