"""What the gateway's handlers share, built once per process in the app's cleanup context."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NatsClient

from mumu.gateway.asks import Asker
from mumu.gateway.auth import ApiKeys
from mumu.gateway.errors import ApiError
from mumu.gateway.feed import LiveFeed
from mumu.gateway.hub import Hub
from mumu.gateway.limits import LagMonitor, RateLimiter
from mumu.gateway.metrics import GatewayMetrics
from mumu.gateway.tokens import TokenSigner
from mumu.settings import Settings

log = logging.getLogger("mumu.gateway")


@dataclass
class GatewayDeps:
    settings: Settings
    signer: TokenSigner
    metrics: GatewayMetrics
    limiter: RateLimiter
    api_keys: ApiKeys
    hub: Hub
    nc: NatsClient
    asker: Asker
    feed: LiveFeed
    lag: LagMonitor
    session_history: Any = None
    _keyring: Any = field(default=None, repr=False)

    def feed_position(self) -> int:
        return self.feed.last_seq

    async def history(self, workspace_id: str, session_id: str) -> Sequence[Any]:
        """Decrypted transcripts and answers of one session, scoped to its workspace."""
        if self.session_history is None:
            raise ApiError(503, "unavailable", "this build has no history store (mumu.db.history)")
        pool = self.api_keys.pool
        if pool is None:
            await self.api_keys.resolve_pool()
            pool = self.api_keys.pool
        if self._keyring is None:
            from mumu.crypto.keyring import Keyring

            try:
                self._keyring = Keyring.from_settings(self.settings)
            except (RuntimeError, ValueError) as exc:
                raise ApiError(503, "unavailable", f"no master keyring: {exc}") from exc
        from mumu.db.datakeys import DataKeyShreddedError
        from mumu.db.pool import UNAVAILABLE

        try:
            items: Sequence[Any] = await self.session_history(
                pool, self._keyring, workspace_id, session_id
            )
        except DataKeyShreddedError as exc:
            raise ApiError(410, "shredded", "this workspace's data was crypto-erased") from exc
        except UNAVAILABLE as exc:
            log.warning("history read failed: %r", exc)
            raise ApiError(
                503, "unavailable", "the database is not reachable; retry",
                headers={"Retry-After": "2"},
            ) from exc
        return items


DEPS = web.AppKey("deps", GatewayDeps)
