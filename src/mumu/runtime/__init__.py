"""The stage runtime: the one place that knows how a stage consumes JetStream."""

from mumu.runtime.errors import (
    Disposition,
    PermanentError,
    RedactedError,
    TransientError,
    UnavailableError,
)
from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.stage import RetryPolicy, Route, Stage, StageContext

__all__ = [
    "Disposition",
    "Inbound",
    "Outbound",
    "PermanentError",
    "RedactedError",
    "RetryPolicy",
    "Route",
    "Stage",
    "StageContext",
    "TransientError",
    "UnavailableError",
]
