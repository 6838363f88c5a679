"""The cursor state of a socket, under any interleaving of publishes, feed pushes, replay
steps, resumes, pings, slow clients, failed replays and reconnects (Hypothesis; the model
is ``cursor_model.py``).

Property: every event of the session reaches the client exactly once and in order.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, given, settings

from mumu.gateway.cursors import SocketCursors
from tests.gateway.cursor_model import STEPS, Ev, Model, steps, violation


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_every_event_reaches_the_client_exactly_once_and_in_order(actions: list[str]) -> None:
    assert violation(SocketCursors, actions) is None


def test_a_client_that_stays_connected_needs_no_resume() -> None:
    """A plain case spelled out: events published while the socket is up arrive live."""
    actions = ["replay", "replay", "read", "read",  # the connect replay: resumed, ready
               "publish_me", "publish_other", "publish_me", "feed", "feed", "feed",
               "read", "read"]
    model = Model(SocketCursors)
    for action in actions:
        STEPS[action](model)
    assert model.received == [1, 3]


class NoHold(SocketCursors[Ev]):
    """Broken: drops the live events that arrive during a replay instead of holding them."""

    def _hold(self, event: Ev) -> None:
        return None


class ReplaysAgain(SocketCursors[Ev]):
    """Broken: a replay sends again what an earlier replay sent (a client that had not
    read it all yet resumed from before it)."""

    def wanted(self, sequence: int) -> bool:
        return not (self.live_from < sequence <= self._live_done
                    and sequence not in self._unsent)


class ForgetsClaims(SocketCursors[Ev]):
    """Broken: sends a live event the client already has (it resumed past it: the replay
    of another socket ran ahead of the feed)."""

    def live(self, event: Ev) -> bool:
        claimed, self._claimed = self._claimed, 0  # cursors start at 1: none is claimed
        try:
            return super().live(event)
        finally:
            self._claimed = claimed


class ForgetsReplays(SocketCursors[Ev]):
    """Broken: does not remember what replays sent."""

    def wanted(self, sequence: int) -> bool:
        return not (self.live_from < sequence <= self._live_done
                    and sequence not in self._unsent)

    def live(self, event: Ev) -> bool:
        self._replayed = type(self._replayed)()
        return super().live(event)


@pytest.mark.parametrize(("broken", "close_on_failure"), [
    (NoHold, True), (ReplaysAgain, True), (ForgetsClaims, True), (ForgetsReplays, True),
    # the gateway before: after a failed replay the client got an error, then the held
    # live events (past a gap), and the socket went on; resuming from its last cursor
    # lost the gap
    (SocketCursors, False),
])
def test_the_property_fails_for_a_broken_variant(
    broken: type[SocketCursors[Ev]], close_on_failure: bool
) -> None:
    def fails(actions: list[str]) -> bool:
        return violation(broken, actions, close_on_failure=close_on_failure) is not None

    found = find(steps, fails, settings=settings(max_examples=5000, deadline=None,
                                                 database=None, derandomize=True))
    assert fails(found)
