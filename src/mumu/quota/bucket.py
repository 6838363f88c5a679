"""Token bucket arithmetic, shared by the gateway's per-process rate limiter and the
workspace ask quota (whose state lives in JetStream KV)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second."""

    rate: float
    burst: float

    def refill(self, tokens: float, last: float, now: float) -> float:
        """The tokens a bucket holding ``tokens`` at ``last`` holds at ``now``."""
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def wait(self, tokens: float, cost: float = 1.0) -> int:
        """Whole seconds until ``tokens`` grow to ``cost`` (at least 1)."""
        if self.rate <= 0:
            return 60
        return max(1, math.ceil((cost - tokens) / self.rate))
