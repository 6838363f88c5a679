"""How a handler tells the runtime what went wrong, and what the runtime does about it.

The mapping is explicit (``Disposition``), not a scatter of ``try/except``; the runtime
owns every retry (``runtime/policy.py``), so a handler only raises:

* ``PermanentError`` (bad audio, schema violation, unknown workspace) → ``term``,
  one dead letter on ``mumu.dlq.<stage>.<ws>`` and one ``mumu.error.<ws>`` event;
  ``RedactedError`` (a shredded workspace) the same, with a letter without the body;
* ``TransientError`` → retried in place while the route's ``RetryPolicy`` allows it and
  the attempt published nothing (``retry``), else ``nak`` with a growing delay (or the
  error's ``delay``, a server's ``Retry-After``), then, on the last delivery, the same as
  permanent; any unexpected exception is a ``TransientError`` that is never retried in place;
* ``UnavailableError`` (a ``TransientError``: the database or the keyring is not usable,
  never the data) → ``nak`` while deliveries remain; on the last delivery the runtime
  ``hold``s the message (heart-beaten, the handler re-run after a growing delay) until it
  succeeds, so an outage never dead-letters anything;
* success → outputs published and acknowledged by JetStream, then ``ack``.
"""

from __future__ import annotations

import enum

from mumu.contracts.events import ErrorCode


class Disposition(enum.Enum):
    """What the runtime did with a delivery (the ``outcome`` label of its metrics)."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"
    RETRY = "retry"
    """Re-run in place after a short wait (the delivery count does not move)."""
    HOLD = "hold"
    """Kept on its last delivery while a dependency is down; re-run until it succeeds."""


class StageError(Exception):
    """Base of errors a handler raises on purpose."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class PermanentError(StageError):
    """Retrying cannot help: dead-letter the message and tell the client."""


class RedactedError(PermanentError):
    """Permanent, and the message's content must not outlive it (its workspace was
    crypto-shredded): the dead letter carries neither the body nor the original headers,
    only the reason and where the message was (stage, subject, stream, sequence)."""


class TransientError(StageError):
    """Retrying later may help (a backend or database is down).

    ``delay``: the wait the cause asked for (``Retry-After``); ``in_place=False`` says a
    retry in place cannot help (e.g. the backend refused the request itself).
    """

    def __init__(
        self, code: ErrorCode, message: str, *, delay: float | None = None, in_place: bool = True
    ) -> None:
        super().__init__(code, message)
        self.delay = delay
        self.in_place = in_place


class UnavailableError(TransientError):
    """A dependency is down (``reason``: what, e.g. ``database_unavailable``), not the data:
    held on the last delivery instead of dead-lettered.

    ``hold_limit``: the longest a delivery is held for this cause (seconds), after which
    it is dead-lettered; ``None`` holds until it succeeds (an outage of the whole stage,
    e.g. the database). A cause that concerns one tenant (its data key) sets a limit, so
    that tenant's messages never sit on the stage's in-flight slots for ever."""

    def __init__(self, code: ErrorCode, message: str, *, reason: str,
                 hold_limit: float | None = None) -> None:
        super().__init__(code, message, in_place=False)
        self.reason = reason
        self.hold_limit = hold_limit


def nak_delay(backoff: list[float], delivered: int) -> float:
    """The delay before delivery ``delivered + 1``: backoff[delivered-1], the last repeating."""
    if not backoff:
        return 0.0
    return backoff[min(max(delivered, 1), len(backoff)) - 1]
