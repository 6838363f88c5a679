"""Who is asking: workspace API keys (Postgres) and session tokens (HMAC, no lookup)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiohttp import web

from mumu.db.owned_pool import OwnedPool
from mumu.db.pool import UNAVAILABLE
from mumu.db.workspaces import resolve_api_key
from mumu.gateway.errors import ApiError
from mumu.gateway.tokens import InvalidTokenError, SessionClaims, TokenSigner
from mumu.settings import Settings

log = logging.getLogger("mumu.gateway.auth")

_LOOKUP_FAILED: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)
"""The database could not say whose key it is (not: the key is unknown)."""


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(
            401, "unauthorized", "missing `Authorization: Bearer <key or token>` header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return value.strip()


def session_claims(request: web.Request, signer: TokenSigner) -> SessionClaims:
    """The session a request is bound to, from its bearer session token."""
    try:
        return signer.verify(bearer(request))
    except InvalidTokenError as exc:
        raise ApiError(
            401, "invalid_token", str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc


class ApiKeys:
    """Resolves workspace API keys (stored hashed by the persistence layer) to workspaces."""

    def __init__(self, settings: Settings) -> None:
        self._pool = OwnedPool.app(settings.database, min_size=1, max_size=8,
                                   owner="the gateway")

    @property
    def configured(self) -> bool:
        return self._pool.configured

    async def open(self) -> None:
        if not self.configured:
            log.warning("no MUMU_DATABASE_URL: API keys cannot be checked, /api/session is 503")
            return
        # the gateway starts while the database is down (ready says why not); a role that
        # row-level security does not bind stops it here (UnsafeRoleError)
        await self._pool.open(tolerate=True)

    async def _connect(self) -> asyncpg.Pool:
        return await self._pool.get()

    async def resolve_pool(self) -> asyncpg.Pool:
        """The pool, connecting if needed; 503 when there is no reachable database."""
        if not self.configured:
            raise ApiError(503, "unavailable", "MUMU_DATABASE_URL is not set")
        try:
            return await self._connect()
        except Exception as exc:
            log.warning("database not reachable: %r", exc)
            raise ApiError(
                503, "unavailable", "the database is not reachable; retry",
                headers={"Retry-After": "2"},
            ) from exc

    async def close(self) -> None:
        await self._pool.close()

    async def resolve(self, key: str) -> str:
        """The workspace of ``key``; 401 when unknown, 503 when the database cannot say."""
        if not self.configured:
            raise ApiError(
                503, "unavailable",
                "API keys live in PostgreSQL and MUMU_DATABASE_URL is not set",
            )
        try:
            pool = await self._connect()
            workspace = await resolve_api_key(pool, key)
        except asyncpg.UndefinedTableError as exc:
            raise ApiError(
                503, "unavailable",
                "the workspace tables are missing: run `mumu migrate` on this database",
            ) from exc
        except _LOOKUP_FAILED as exc:
            log.warning("API key lookup failed: %r", exc)
            raise ApiError(
                503, "unavailable", "the workspace database is not reachable; retry",
                headers={"Retry-After": "2"},
            ) from exc
        if workspace is None:
            raise ApiError(
                401, "invalid_api_key", "unknown or revoked API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return workspace

    async def ping(self) -> str | None:
        """None when the database answers, else the reason."""
        if not self.configured:
            return "database: MUMU_DATABASE_URL is not set"
        try:
            pool = await self._connect()
            async with asyncio.timeout(2.0):
                await pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - a readiness reason, not a crash
            return f"database: {exc!r}"
        return None
