"""The stage runtime: the one place that knows how a stage consumes JetStream."""

from mumu.runtime.errors import PermanentError, TransientError
from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.stage import Route, Stage, StageContext

__all__ = [
    "Inbound",
    "Outbound",
    "PermanentError",
    "Route",
    "Stage",
    "StageContext",
    "TransientError",
]
