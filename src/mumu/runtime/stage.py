"""What a stage declares: its routes and its resources."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel

from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings

Handler = Callable[[Inbound[Any]], Awaitable[Sequence[Outbound]]]
AfterAck = Callable[[Inbound[Any]], Awaitable[None]]
"""Clean-up once a message is acked (its outputs are stored); its failure is only logged."""
BatchHandler = Callable[
    [Sequence[Inbound[Any]]], Awaitable[Sequence[Sequence[Outbound] | BaseException]]
]
"""Handles a fetched batch at once: per inbound, its outputs or what went wrong with it."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the runtime re-runs a route's handler before the message goes back to the server.

    ``in_place``: retries in place of a ``TransientError`` raised by an attempt that
    published nothing (the delivery count does not move; a backend's quick 429/503).
    Waits start at ``first_delay`` (or the error's ``delay``) and double; a wait longer
    than ``max_delay`` is not waited in place: the message is nak'ed with it instead.
    A held message (``UnavailableError`` on its last delivery) is re-run after the same
    growing waits, capped at ``max_delay``. ``None`` takes the runtime's first and last
    nak delays (``MUMU_STAGE__BACKOFF``).
    """

    in_place: int = 0
    first_delay: float | None = None
    max_delay: float | None = None
    held_per_workspace: int | None = None
    """Most deliveries of one workspace (the subject's last token) held at once for a
    cause with a ``hold_limit`` (one tenant's trouble); one more is dead-lettered at
    once instead of held, so that tenant cannot take every in-flight slot."""


@dataclass(frozen=True)
class Route:
    """One durable pull consumer: a stream, its filter subjects, a model and a handler.

    ``model=None`` hands the raw payload to the handler (ingest audio).
    ``durable`` names the route's durable consumer (from ``contracts.consumers``; without
    one it is ``<stage>-<stream>`` in lower case); replicas of a stage share it and so
    share the work. ``retry`` is how the runtime retries it (``RetryPolicy``).

    A ``batch_handler`` instead of a ``handler`` gets each fetched batch (up to
    ``batch`` messages) in one call; the outputs of the batch are published together
    (JetStream atomic batches) before its inputs are acked. ``concurrency`` counts
    messages either way.

    ``after_ack`` runs once a delivery of a ``handler`` route is acked (never after a
    ``nak`` or a dead letter): clean-up of what the input referred to, such as a
    producer's upload. It cannot change the outcome; a failure is logged.
    """

    stream: str
    subjects: tuple[str, ...]
    handler: Handler | None = None
    model: type[BaseModel] | None = None
    durable: str | None = None
    concurrency: int | None = None
    ack_wait: float | None = None
    batch_handler: BatchHandler | None = None
    batch: int | None = None
    retry: RetryPolicy = RetryPolicy()
    after_ack: AfterAck | None = None
    fetch_ahead: int | None = None
    """Messages fetched beyond the free slots, served round-robin by workspace (fair
    scheduling); ``None``: ``MUMU_STAGE__FETCH_AHEAD``; 0: plain stream order."""

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.batch_handler is None):
            raise ValueError("a route takes exactly one of handler and batch_handler")


def durable_of(stage: str, route: Route) -> str:
    """The route's durable consumer: ``route.durable`` or ``<stage>-<stream>``."""
    return route.durable or f"{stage}-{route.stream.lower().replace('_', '-')}"


@dataclass
class StageContext:
    """What a running stage gets from the runtime."""

    name: str
    settings: Settings
    nc: NATS
    js: JetStreamContext
    metrics: StageMetrics
    tracing: Tracing
    log: logging.Logger


class Stage(Protocol):
    """A stage: ``start`` opens its resources (model, pool) before the stage is ready."""

    name: str

    def routes(self) -> Sequence[Route]: ...

    async def start(self, ctx: StageContext) -> None: ...

    async def stop(self) -> None: ...
