"""What the gateway's handlers share, built once per process in the app's cleanup context."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client as NatsClient

from mumu.crypto.errors import KeyringError, UnknownMasterKeyError
from mumu.crypto.keyring import Keyring
from mumu.db.api_keys import KeyOwner
from mumu.db.datakeys import DataKeyShreddedError
from mumu.db.history import HistoryItem, session_history
from mumu.db.pool import UNAVAILABLE
from mumu.gateway.admission import Admission
from mumu.gateway.asks import Asker
from mumu.gateway.auth import ApiKeys, bearer, session_claims
from mumu.gateway.errors import ApiError
from mumu.gateway.failed_keys import FailedKeys
from mumu.gateway.feed import LiveFeed
from mumu.gateway.hub import Hub
from mumu.gateway.key_status import KeyStatus
from mumu.gateway.limits import LagMonitor, RateLimiter
from mumu.gateway.live import LiveIngest
from mumu.gateway.metrics import GatewayMetrics
from mumu.gateway.tokens import SessionClaims, TokenSigner
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
    key_failures: FailedKeys
    """Failed API key attempts per client and key prefix."""
    key_status: KeyStatus
    """Whether the API keys behind session tokens are still live."""
    _keyring: Keyring | None = field(default=None, repr=False)
    admission: Admission = field(init=False)
    """The caps on sockets, audio buffers and waiting requests (``gateway.admission``)."""
    live: LiveIngest = field(init=False)
    """Opens live streams (websocket ``stream.start``, Realtime sessions)."""

    def __post_init__(self) -> None:
        gw = self.settings.gateway
        self.admission = Admission.of(
            max_sockets=gw.max_sockets, max_sockets_per_workspace=gw.max_sockets_per_workspace,
            max_audio_buffers=gw.max_audio_buffers,
            max_audio_buffers_per_workspace=gw.max_audio_buffers_per_workspace,
            max_waiting=gw.max_waiting, max_waiting_per_workspace=gw.max_waiting_per_workspace,
        )
        self.live = LiveIngest(self.nc, self.asker, gw.stream_in_flight)

    def feed_position(self) -> int:
        return self.feed.last_seq

    async def workspace_of(self, request: web.Request) -> str:
        """The workspace of the request's bearer API key (see ``key_of``)."""
        return (await self.key_of(request)).workspace_id

    async def key_of(self, request: web.Request) -> KeyOwner:
        """The API key of the request's bearer header. A client that keeps failing with
        one key gets 429 (with ``Retry-After``) for that key before it is even looked at;
        the bucket is the client's address (behind a trusted proxy: the address it
        forwarded) *and* the key's prefix, so neither the other clients behind the same
        proxy nor the same client's other keys are locked out."""
        key = bearer(request)
        client = request.remote or "unknown"
        self.key_failures.check(client, key)
        try:
            return await self.api_keys.owner(key)
        except ApiError as exc:
            if exc.code == "invalid_api_key":
                self.key_failures.failed(client, key)
            raise

    async def session(self, request: web.Request) -> SessionClaims:
        """The session of the request's bearer token, whose API key must still be live."""
        claims = session_claims(request, self.signer)
        await self.key_status.require(claims)
        return claims

    def keyring(self) -> Keyring:
        """The master keyring (``MUMU_MASTER_KEYS``); 503 when it is missing or malformed."""
        if self._keyring is None:
            try:
                self._keyring = Keyring.from_secret(self.settings.master_keys)
            except KeyringError as exc:
                log.exception("no usable master keyring")
                raise ApiError(503, "unavailable", "stored history cannot be read right now",
                               headers={"Retry-After": "30"}) from exc
        return self._keyring

    async def history(self, workspace_id: str, session_id: str) -> list[HistoryItem]:
        """Decrypted transcripts and answers of one session, scoped to its workspace."""
        pool = await self.api_keys.resolve_pool()
        try:
            return await session_history(pool, self.keyring(), workspace_id, session_id)
        except DataKeyShreddedError as exc:
            raise ApiError(410, "shredded", "this workspace's data was crypto-erased") from exc
        except UnknownMasterKeyError as exc:
            # a rotation half done (a key promoted that this process was not restarted with):
            # the operator's log names the key, the client learns only to retry later
            log.exception("history read refused")
            raise ApiError(
                503, "unavailable", "the master keyring of this gateway is out of date; retry",
                headers={"Retry-After": "30"},
            ) from exc
        except UNAVAILABLE as exc:
            log.warning("history read failed: %r", exc)
            raise ApiError(
                503, "unavailable", "the database is not reachable; retry",
                headers={"Retry-After": "2"},
            ) from exc


DEPS = web.AppKey("deps", GatewayDeps)
