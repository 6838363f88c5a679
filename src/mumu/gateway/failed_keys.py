"""Failed API key attempts: limited per client *and* key prefix, with a wider ceiling per
client.

The client is the peer address, or behind a trusted proxy (``MUMU_GATEWAY__TRUSTED_PROXIES``)
the address that proxy forwarded. Keying on the prefix too means a client that keeps
sending one stale key is slowed down for that key only: its other keys, and the other
clients behind the same proxy or NAT, keep working. The ceiling per client (ten times the
per-key limits) bounds the lookups one client can cause by spraying made-up keys.
"""

from __future__ import annotations

import logging

from mumu.db.api_keys import key_prefix
from mumu.gateway.limits import RateLimiter

log = logging.getLogger("mumu.gateway.auth")

CLIENT_FACTOR = 10
"""The per-client ceiling, in multiples of the per-(client, key prefix) limits."""


class FailedKeys:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_key = RateLimiter(per_second, burst,
                                   "too many failed attempts with this API key from here")
        self.per_client = RateLimiter(per_second * CLIENT_FACTOR, burst * CLIENT_FACTOR,
                                      "too many failed API key attempts from this address")

    @staticmethod
    def _bucket(client: str, key: str) -> str:
        return f"{client} {key_prefix(key)}"

    def check(self, client: str, key: str) -> None:
        """429 (with ``Retry-After``) when ``client`` failed too often with this key, or
        with any key."""
        self.per_client.check(client)
        self.per_key.check(self._bucket(client, key))

    def failed(self, client: str, key: str) -> None:
        self.per_key.spend(self._bucket(client, key))
        self.per_client.spend(client)
        log.info("failed API key attempt from %s with key %s...", client, key_prefix(key))
