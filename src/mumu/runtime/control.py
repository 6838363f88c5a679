"""Control notices every replica of a stage must see (cancels, shreds): a plain core NATS
subscription on a control subject, not a durable consumer, so each replica gets each one.
A stage handles a notice as its subject and bytes (``on_notice``), never as a ``nats.Msg``
(``tests/test_layers.py::test_no_stage_handles_a_nats_msg``)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError


class ControlListener(ABC):
    """Subscribes to ``subject`` (a wildcard over workspaces); ``on_notice`` handles each
    notice. A subclass sets the subject and implements ``on_notice``."""

    def __init__(self, subject: str) -> None:
        self._subject = subject
        self._sub: Subscription | None = None

    async def subscribe(self, nc: Client) -> None:
        self._sub = await nc.subscribe(self._subject, cb=self._deliver)
        await nc.flush()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _deliver(self, msg: Msg) -> None:
        await self.on_notice(msg.subject, msg.data)

    @abstractmethod
    async def on_notice(self, subject: str, data: bytes) -> None:
        """Handle one notice (never raising: a bad notice is logged and dropped)."""


def why_invalid(exc: ValidationError) -> str:
    """What is wrong with a control message, for the log: the fields and the reasons, never
    the message's own bytes (pydantic's ``str(exc)`` quotes them as ``input_value``)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}"
                     for e in exc.errors(include_input=False)[:5])
