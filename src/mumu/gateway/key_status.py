"""Is the API key behind a session token still live? A short-lived answer from PostgreSQL.

Every replica keeps, per API key id it has seen in a token, when PostgreSQL last said
the key is live (not revoked, its workspace not deleted). ``run`` asks again about every
key in use once per ``interval`` (one query for all of them) and reports the keys that
died, so their websockets close; a token whose key was confirmed longer than ``max_age``
ago (a new key, or the database did not answer) is looked up before it is accepted.
So a revocation takes effect within ``interval`` on every replica while the database
answers, and within ``max_age`` on HTTP requests in any case (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from mumu.gateway.errors import ApiError
from mumu.gateway.tokens import InvalidTokenError, SessionClaims, TokenSigner

log = logging.getLogger("mumu.gateway.keys")

Lookup = Callable[[Sequence[str]], Awaitable[dict[str, str]]]
"""Key ids → {live key id: its workspace}."""
MAX_DEAD = 10_000
IDLE = 300.0
"""Seconds after its last use a key is no longer checked (unless a socket holds it)."""


@dataclass
class _Seen:
    workspace_id: str
    confirmed: float
    used: float


def revoked() -> ApiError:
    return ApiError(
        401, "token_revoked",
        "the API key this session token was issued for is revoked (or its workspace "
        "deleted): get a new token with a live API key",
        headers={"WWW-Authenticate": "Bearer"},
    )


class KeyStatus:
    def __init__(self, lookup: Lookup | None, *, interval: float, max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        """None: no database, so no key to check (tokens carry none either)."""
        self.interval = interval
        self.max_age = max_age
        self._clock = clock
        self._live: dict[str, _Seen] = {}
        self._dead: dict[str, float] = {}
        self.in_use: Callable[[], Iterable[str | None]] = tuple
        """The key ids of what is open (websockets): checked while open, however idle."""
        self.on_dead: Callable[[set[str]], None] = lambda _: None
        """Told which keys died (revoked or deleted) at each check that finds some."""

    async def renewal(self, signer: TokenSigner, token: object,
                      current: SessionClaims) -> SessionClaims:
        """The claims of a new token for ``current``'s session (an ``auth`` message on an
        open socket); ``ApiError`` when it is no valid token of a live key for it."""
        if not isinstance(token, str):
            raise ApiError(400, "bad_message", 'auth needs "token": a session token')
        try:
            claims = signer.verify(token)
        except InvalidTokenError as exc:
            raise ApiError(401, "invalid_token", str(exc)) from exc
        await self.require(claims)
        if (claims.workspace_id, claims.session_id) != (current.workspace_id,
                                                        current.session_id):
            raise ApiError(400, "bad_message", "a new token must be for this socket's session")
        return claims

    async def require(self, claims: SessionClaims) -> None:
        """Pass when the token's API key is live; 401 ``token_revoked`` when it is not,
        503 when the database cannot say and the last word is older than ``max_age``."""
        if self._lookup is None:
            return
        kid = claims.key_id
        if kid is None:
            raise ApiError(401, "invalid_token", "this session token names no API key: ask "
                           "POST /api/session for a new one",
                           headers={"WWW-Authenticate": "Bearer"})
        if kid in self._dead:
            raise revoked()
        now = self._clock()
        seen = self._live.get(kid)
        if seen is None or now - seen.confirmed > self.max_age:
            try:
                await self._check([kid])
            except Exception as exc:
                log.warning("could not check API key %s: %r", kid, exc)
                raise ApiError(503, "unavailable", "cannot check the session's API key "
                               "right now; retry", headers={"Retry-After": "2"}) from exc
            seen = self._live.get(kid)
        if seen is None or seen.workspace_id != claims.workspace_id:
            raise revoked()
        seen.used = now

    async def _check(self, kids: Sequence[str]) -> set[str]:
        """Ask the database about ``kids``; returns those newly found dead."""
        assert self._lookup is not None
        live = await self._lookup(kids)
        now = self._clock()
        died: set[str] = set()
        for kid in kids:
            ws = live.get(kid)
            seen = self._live.get(kid)
            if ws is None:
                self._live.pop(kid, None)
                if kid not in self._dead:
                    died.add(kid)
                self._dead[kid] = now
            elif seen is None:
                self._live[kid] = _Seen(ws, now, now)
            else:
                seen.workspace_id, seen.confirmed = ws, now
        while len(self._dead) > MAX_DEAD:  # forgotten ones are looked up again: still dead
            self._dead.pop(next(iter(self._dead)))
        return died

    async def refresh(self) -> None:
        """One check of every key in use; the dead ones are reported to ``on_dead``."""
        if self._lookup is None:
            return
        now = self._clock()
        holding = {kid for kid in self.in_use() if kid is not None and kid not in self._dead}
        for kid in [k for k, s in self._live.items() if now - s.used > IDLE and k not in holding]:
            del self._live[kid]
        kids = sorted(holding | set(self._live))
        if not kids:
            return
        try:
            died = await self._check(kids)
        except Exception as exc:  # noqa: BLE001 - logged; tokens go stale and get 503
            log.warning("could not check %d API keys: %r", len(kids), exc)
            return
        if died:
            log.info("API keys no longer live (revoked or workspace deleted): %s",
                     ", ".join(sorted(died)))
            self.on_dead(died)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set():
                await self.refresh()
