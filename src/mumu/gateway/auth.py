"""Who is asking: workspace API keys (Postgres) and session tokens (HMAC, no lookup)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from aiohttp import web

from mumu.db.api_keys import KeyOwner, live_keys, resolve_key
from mumu.db.owned_pool import OwnedPool
from mumu.db.pool import UNAVAILABLE
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
        return (await self.owner(key)).workspace_id

    async def live(self, key_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``key_ids`` are live, with their workspaces (``KeyStatus``'s lookup)."""
        return await live_keys(await self._connect(), key_ids)

    async def owner(self, key: str) -> KeyOwner:
        """The id and workspace of ``key``; 401 when unknown, 503 when the database
        cannot say."""
        if not self.configured:
            raise ApiError(
                503, "unavailable",
                "API keys live in PostgreSQL and MUMU_DATABASE_URL is not set",
            )
        try:
            pool = await self._connect()
            owner = await resolve_key(pool, key)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError) as exc:
            log.exception("API key lookup failed: the schema is missing or old; run "
                          "`mumu migrate` on this database")
            raise ApiError(
                503, "unavailable", "the workspace database is not ready; retry later",
                headers={"Retry-After": "30"},
            ) from exc
        except _LOOKUP_FAILED as exc:
            log.warning("API key lookup failed: %r", exc)
            raise ApiError(
                503, "unavailable", "the workspace database is not reachable; retry",
                headers={"Retry-After": "2"},
            ) from exc
        if owner is None:
            raise ApiError(
                401, "invalid_api_key", "unknown or revoked API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return owner

    async def ping(self) -> str | None:
        """None when the database answers, else the reason."""
        if not self.configured:
            return "database: MUMU_DATABASE_URL is not set"
        try:
            pool = await self._connect()
            async with asyncio.timeout(2.0):
                await pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - a readiness reason, not a crash
            log.warning("readiness: database check failed: %r", exc)
            return "database: not reachable (the gateway's log says why)"
        return None
