"""Settling one delivery: ``ack``, ``nak`` with a delay, or ``term`` + dead letter.

A settle call that fails (the connection closed under it) is logged and swallowed:
the server redelivers the message after its ack wait, and the worker keeps running.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel

from mumu.broker.ack_subject import ack_fields
from mumu.contracts.events import ErrorCode
from mumu.contracts.subjects import last_token
from mumu.runtime.deadletter import dead_letter, error_event, request_identity
from mumu.runtime.errors import Disposition, PermanentError, StageError, TransientError, nak_delay
from mumu.runtime.messages import Inbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.tracing import MessageSpan


@dataclass(slots=True)
class Delivery:
    """One delivery being handled; ``outcome`` is None until it is settled."""

    msg: Msg
    deliveries: int
    sequence: int
    span: MessageSpan
    inbound: Inbound[Any] | None = None
    outcome: Disposition | None = None

    @property
    def event(self) -> BaseModel | None:
        return self.inbound.event if self.inbound is not None else None


def delivery_of(msg: Msg) -> tuple[int, int]:
    """(deliveries, stream sequence) of a JetStream delivery, from its ack subject."""
    try:
        fields = ack_fields(msg.reply or "")
    except ValueError:
        meta = msg.metadata
        return meta.num_delivered or 1, meta.sequence.stream
    return fields.delivered, fields.stream_seq


class Settler:
    """Maps a failure to ``term`` + dead letter or ``nak``; acks that cannot fail the worker."""

    def __init__(
        self, *, stage: str, stream: str, publisher: Publisher, metrics: StageMetrics,
        backoff: list[float], max_deliver: int, log: logging.Logger,
    ) -> None:
        self.stage = stage
        self.stream = stream
        self.publisher = publisher
        self.metrics = metrics
        self.backoff = backoff
        self.max_deliver = max_deliver
        self.log = log

    def _context(self, d: Delivery, code: str | None = None) -> dict[str, object]:
        request_id, _ = request_identity(d.msg, d.event)
        extra: dict[str, object] = {
            "stage": self.stage, "subject": d.msg.subject, "seq": d.sequence,
            "request_id": request_id, "deliveries": d.deliveries,
        }
        if code is not None:
            extra["code"] = code
        return extra

    async def ack(self, d: Delivery) -> None:
        """``ack``; if that fails the message counts as nak'ed (it will come back)."""
        acked = await self._safely(d, "ack", d.msg.ack())
        d.outcome = Disposition.ACK if acked else Disposition.NAK

    async def nak(self, d: Delivery, delay: float | None = None) -> None:
        await self._safely(d, "nak", d.msg.nak(delay=delay))
        d.outcome = Disposition.NAK

    async def _safely(self, d: Delivery, what: str, call: Any) -> bool:
        try:
            await call
        except Exception as exc:  # noqa: BLE001 - the server redelivers; the worker goes on
            self.log.warning("%s failed (%r); the server will redeliver", what, exc,
                             extra=self._context(d))
            return False
        return True

    async def settle(self, d: Delivery, exc: BaseException) -> None:
        """What a failure means for the message: ``term`` + dead letter, or ``nak``."""
        if isinstance(exc, PermanentError):
            await self._reject(d, exc.code, exc.message)
            return
        code: ErrorCode = exc.code if isinstance(exc, StageError) else "internal"
        message = exc.message if isinstance(exc, StageError) else repr(exc)
        if d.deliveries >= self.max_deliver:
            await self._reject(d, code, f"gave up after {d.deliveries} deliveries: {message}")
            return
        delay = exc.delay if isinstance(exc, TransientError) and exc.delay else None
        delay = delay if delay is not None else nak_delay(self.backoff, d.deliveries)
        self.log.warning(
            "retrying in %.2fs (delivery %d): %s", delay, d.deliveries, message,
            extra=self._context(d, code),
        )
        await self.nak(d, delay)

    async def _reject(self, d: Delivery, code: ErrorCode, message: str) -> None:
        """Dead-letter once, tell the client, then ``term``; if that fails, ``nak``."""
        msg = d.msg
        letter = dead_letter(
            msg, stage=self.stage, code=code, reason=message, stream=self.stream,
            sequence=d.sequence, deliveries=d.deliveries,
            max_payload=self.publisher.max_payload(),
        )
        err = error_event(
            msg, d.event, stage=self.stage, code=code, message=message,
            workspace_id=last_token(msg.subject), sequence=d.sequence,
        )
        trace: Mapping[str, str] = d.span.headers
        try:
            await self.publisher.publish(letter, trace)
            if err is not None:
                await self.publisher.publish(err, trace)
        except TransientError:
            self.log.exception("could not dead-letter; will retry", extra=self._context(d, code))
            await self.nak(d, nak_delay(self.backoff, d.deliveries))
            return
        await self._safely(d, "term", msg.term())
        d.outcome = Disposition.TERM
        m = self.metrics
        m.dead_letters.labels(m.stage, code).inc()
        self.log.warning("dead-lettered: %s", message, extra=self._context(d, code))


async def nak_quietly(msg: Msg) -> None:
    """On cancellation (drain timeout): give the message back, whatever happens."""
    with contextlib.suppress(Exception):
        await msg.nak()
