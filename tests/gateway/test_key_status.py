"""Fast forms of the token checks: signing with two secrets, and ``KeyStatus``'s cache
against an in-memory key table (the real-server tests are in test_revocation.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import SecretStr

from mumu.gateway.errors import ApiError
from mumu.gateway.key_status import KeyStatus
from mumu.gateway.tokens import InvalidTokenError, SessionClaims, TokenSigner

WS = "11111111-1111-4111-8111-111111111111"
OLD, NEW = SecretStr("old-secret-0123456789"), SecretStr("new-secret-0123456789")


def test_tokens_carry_their_api_key_and_verify_with_the_current_or_previous_secret() -> None:
    token, _ = TokenSigner(OLD, 60).issue(WS, "s1", key_id="k1")
    assert TokenSigner(NEW, 60, previous=OLD).verify(token) == SessionClaims(
        WS, "s1", TokenSigner(OLD, 60).verify(token).expires_at, "k1")
    with pytest.raises(InvalidTokenError, match="signature"):
        TokenSigner(NEW, 60).verify(token)
    with pytest.raises(RuntimeError, match="SESSION_SECRET_PREVIOUS"):
        TokenSigner(NEW, 60, previous=SecretStr("short"))


class Table:
    def __init__(self) -> None:
        self.live = {"k1": WS, "k2": WS}
        self.asked: list[list[str]] = []
        self.down = False

    async def __call__(self, kids: Sequence[str]) -> dict[str, str]:
        self.asked.append(list(kids))
        if self.down:
            raise OSError("connection refused")
        return {k: self.live[k] for k in kids if k in self.live}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_key_status_caches_for_max_age_and_reports_dead_keys_on_refresh() -> None:
    table, clock = Table(), Clock()
    status = KeyStatus(table, interval=1.0, max_age=3.0, clock=clock)
    dead: list[set[str]] = []
    status.on_dead = dead.append
    status.in_use = lambda: ["k2"]  # an open socket holds k2
    one = SessionClaims(WS, "s", 0.0, "k1")
    await status.require(one)
    await status.require(one)
    assert table.asked == [["k1"]]  # the second one came from the cache

    del table.live["k1"]
    clock.now += 1.0
    await status.require(one)  # confirmed 1 s ago: still served from the cache...
    await status.refresh()  # ...until the next refresh, which asks about every key in use
    assert table.asked[-1] == ["k1", "k2"]
    assert dead == [{"k1"}]
    with pytest.raises(ApiError) as refused:
        await status.require(one)
    assert (refused.value.status, refused.value.code) == (401, "token_revoked")

    table.down = True  # the database is down: k2 is served until its word is 3 s old
    await status.refresh()
    two = SessionClaims(WS, "s", 0.0, "k2")
    await status.require(two)
    clock.now += 3.5
    with pytest.raises(ApiError) as unsure:
        await status.require(two)
    assert unsure.value.status == 503
    table.down = False
    elsewhere = SessionClaims("22222222-2222-4222-8222-222222222222", "s", 0.0, "k2")
    with pytest.raises(ApiError) as other_ws:  # a live key, but of another workspace
        await status.require(elsewhere)
    assert other_ws.value.code == "token_revoked"
