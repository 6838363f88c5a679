"""The one error of the quota layer: which limit, a message for the client, when to retry."""

from __future__ import annotations

import math


class QuotaExceededError(Exception):
    """A workspace is at one of its limits; the gateway answers 429 with ``Retry-After``,
    a stage dead-letters the message with ``quota_exceeded``."""

    def __init__(self, limit: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))
