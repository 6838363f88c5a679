"""How a handler tells the runtime what went wrong, and what the runtime does about it.

The mapping is explicit (``Disposition``), not a scatter of ``try/except``:

* ``PermanentError`` (bad audio, schema violation, unknown workspace) → ``term``,
  one dead letter on ``mumu.dlq.<stage>`` and one ``mumu.error.<ws>`` event;
* ``TransientError`` and any unexpected exception → ``nak`` with a growing delay,
  then, on the last delivery, the same as permanent;
* success → outputs published and acknowledged by JetStream, then ``ack``.
"""

from __future__ import annotations

import enum

from mumu.contracts.events import ErrorCode


class Disposition(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    TERM = "term"


class StageError(Exception):
    """Base of errors a handler raises on purpose."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class PermanentError(StageError):
    """Retrying cannot help: dead-letter the message and tell the client."""


class TransientError(StageError):
    """Retrying later may help (a backend or database is down)."""

    def __init__(self, code: ErrorCode, message: str, *, delay: float | None = None) -> None:
        super().__init__(code, message)
        self.delay = delay


def nak_delay(backoff: list[float], delivered: int) -> float:
    """The delay before delivery ``delivered + 1``: backoff[delivered-1], the last repeating."""
    if not backoff:
        return 0.0
    return backoff[min(max(delivered, 1), len(backoff)) - 1]
