"""What a handler receives (``Inbound``) and what it emits (``Outbound``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel

from mumu.contracts import headers as h
from mumu.contracts.events import Event

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish. ``msg_id`` is the deterministic ``Nats-Msg-Id``."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, subject: str, event: Event, headers: Mapping[str, str] | None = None) -> Outbound:
        return cls(
            subject=subject,
            payload=event.model_dump_json().encode(),
            msg_id=event.event_id,
            headers=dict(headers or {}),
        )


Emit = Callable[[Outbound], Awaitable[None]]


@dataclass(slots=True)
class Inbound(Generic[E]):
    """One delivery of one message to a handler.

    ``event`` is the validated body (``None`` for routes that take raw bytes).
    ``emit`` publishes an output right away (partials, deltas) and waits for
    JetStream to acknowledge it; outputs the handler returns are published after
    it returns, and only then is the input acknowledged.
    """

    msg: Msg
    event: E | None
    subject: str
    workspace_id: str
    stream: str
    sequence: int
    deliveries: int
    emit: Emit

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self.msg.headers or {}

    @property
    def request_id(self) -> str | None:
        if isinstance(self.event, Event):
            return self.event.request_id
        return self.headers.get(h.REQUEST_ID)

    def body(self) -> E:
        """The validated event; only for routes with a model."""
        if self.event is None:
            raise TypeError("this route takes raw payloads")
        return self.event
