"""What a handler receives (``Inbound``) and what it emits (``Outbound``).

A handler never sees a ``nats.Msg``: the runtime builds the ``Inbound`` from a JetStream
delivery, and ``Inbound.of`` builds one in memory, so a handler can be called in a unit
test without a server (its emitted outputs are kept in ``Inbound.emitted``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel

from mumu.contracts import headers as h
from mumu.contracts.events import Event
from mumu.contracts.subjects import last_token

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish. ``msg_id`` is the deterministic ``Nats-Msg-Id``.

    ``once``: published at most once even when the input is redelivered after the
    stream's dedupe window (a request's final; ``runtime/once.py``)."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    once: bool = False

    @classmethod
    def of(cls, subject: str, event: Event, headers: Mapping[str, str] | None = None, *,
           once: bool = False) -> Outbound:
        return cls(
            subject=subject,
            payload=event.model_dump_json().encode(),
            msg_id=event.event_id,
            headers=dict(headers or {}),
            once=once,
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

    event: E | None
    data: bytes
    headers: Mapping[str, str]
    subject: str
    workspace_id: str
    stream: str
    sequence: int
    deliveries: int
    emit: Emit
    emitted: Sequence[Outbound] = ()
    """What ``emit`` published, in order (kept only by the in-memory form; a delivery
    from the server allocates nothing for it)."""

    @classmethod
    def of(
        cls, body: E | bytes, *, subject: str, headers: Mapping[str, str] | None = None,
        stream: str = "", sequence: int = 1, deliveries: int = 1,
    ) -> Inbound[E]:
        """An in-memory delivery of ``body`` (an event, or raw bytes for a raw route) on
        ``subject``; ``emit`` appends to ``emitted``."""
        event = None if isinstance(body, bytes) else body
        data = body if isinstance(body, bytes) else body.model_dump_json().encode()
        emitted: list[Outbound] = []

        async def collect(out: Outbound) -> None:
            emitted.append(out)

        return cls(
            event=event, data=data, headers=dict(headers or {}), subject=subject,
            workspace_id=last_token(subject), stream=stream, sequence=sequence,
            deliveries=deliveries, emit=collect, emitted=emitted,
        )

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
