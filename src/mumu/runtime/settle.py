"""Settling one delivery: ``ack``, ``nak`` with a delay, or ``term`` + dead letter; and,
before that, whether the handler runs again in place (``retry``, ``hold``).

A settle call that fails (the connection closed under it) is logged and swallowed:
the server redelivers the message after its ack wait, and the worker keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel

from mumu.broker.ack_subject import delivery_of_reply
from mumu.contracts.events import ErrorCode
from mumu.contracts.headers import TRACEPARENT
from mumu.contracts.subjects import last_token
from mumu.logs import trace_id_of
from mumu.runtime.deadletter import dead_letter, error_event, request_identity
from mumu.runtime.errors import (
    Disposition,
    PermanentError,
    RedactedError,
    StageError,
    TransientError,
    UnavailableError,
    nak_delay,
)
from mumu.runtime.messages import Inbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.stage import RetryPolicy
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
    emitted: int = 0
    """Outputs the current attempt published through ``emit``."""
    retries: int = 0
    """Retries in place so far."""
    held: str | None = None
    """Why the delivery is held (its ``UnavailableError.reason``), while it is."""
    holds: int = 0
    held_since: float = 0.0
    """``time.monotonic()`` when the current hold began."""
    held_workspace: str | None = None
    """Its workspace while it is held for a cause with a hold limit (counted per workspace)."""
    ended: bool = False
    """Its bookkeeping is done (the dispatcher's ``_end`` ran)."""

    @property
    def event(self) -> BaseModel | None:
        return self.inbound.event if self.inbound is not None else None


def delivery_of(msg: Msg) -> tuple[int, int]:
    """(deliveries, stream sequence) of a JetStream delivery, from its ack subject."""
    try:
        return delivery_of_reply(msg.reply or "")
    except ValueError:
        meta = msg.metadata
        return meta.num_delivered or 1, meta.sequence.stream


class Settler:
    """Maps a failure to ``term`` + dead letter or ``nak``; acks that cannot fail the worker."""

    def __init__(
        self, *, stage: str, stream: str, publisher: Publisher, metrics: StageMetrics,
        backoff: list[float], max_deliver: int, log: logging.Logger,
        route: str = "", retry: RetryPolicy | None = None,
    ) -> None:
        self.stage = stage
        self.stream = stream
        self.publisher = publisher
        self.metrics = metrics
        self.backoff = backoff
        self.max_deliver = max_deliver
        self.log = log
        self.retry = retry or RetryPolicy()
        self.first_delay = (self.retry.first_delay if self.retry.first_delay is not None
                            else nak_delay(backoff, 1))
        self.max_delay = (self.retry.max_delay if self.retry.max_delay is not None
                          else nak_delay(backoff, len(backoff)))
        m = metrics
        self._m_retry = m.messages.labels(m.stage, route, Disposition.RETRY.value)
        self._m_hold = m.messages.labels(m.stage, route, Disposition.HOLD.value)
        self._route = route
        self._bounded_holds: dict[str, int] = {}  # workspace -> deliveries held (bounded)

    def _context(self, d: Delivery, code: str | None = None) -> dict[str, object]:
        request_id, _ = request_identity(d.msg, d.event)
        extra: dict[str, object] = {
            "stage": self.stage, "subject": d.msg.subject, "seq": d.sequence,
            "request_id": request_id, "deliveries": d.deliveries,
            "stream": self.stream, "workspace_id": last_token(d.msg.subject),
            "trace_id": trace_id_of(d.span.headers.get(TRACEPARENT)),
        }
        if code is not None:
            extra["code"] = code
        return extra

    async def ack(self, d: Delivery) -> None:
        """``ack``; if that fails the message counts as nak'ed (it will come back)."""
        try:  # awaited here, not through _safely: one coroutine less per message
            await d.msg.ack()
        except Exception as exc:  # noqa: BLE001 - the server redelivers; the worker goes on
            self._failed(d, "ack", exc)
            d.outcome = Disposition.NAK
            return
        d.outcome = Disposition.ACK

    async def nak(self, d: Delivery, delay: float | None = None) -> None:
        await self._safely(d, "nak", d.msg.nak(delay=delay))
        d.outcome = Disposition.NAK

    async def _safely(self, d: Delivery, what: str, call: Any) -> bool:
        try:
            await call
        except Exception as exc:  # noqa: BLE001 - the server redelivers; the worker goes on
            self._failed(d, what, exc)
            return False
        return True

    def _failed(self, d: Delivery, what: str, exc: Exception) -> None:
        self.log.warning("%s failed (%r); the server will redeliver", what, exc,
                         extra=self._context(d))

    def again(self, d: Delivery, exc: BaseException) -> float | None:
        """Seconds to wait before running the handler again in place, or None to settle.

        ``hold``: an ``UnavailableError`` on the last delivery (dead-lettered only once it
        has been held for the error's ``hold_limit``);
        ``retry``: a ``TransientError`` of an attempt that published nothing, while the
        route's ``RetryPolicy.in_place`` allows and the wait asked for is short enough.
        """
        if isinstance(exc, UnavailableError) and d.deliveries >= self.max_deliver:
            return self._hold(d, exc)
        if (not isinstance(exc, TransientError) or not exc.in_place or d.emitted
                or d.retries >= self.retry.in_place):
            return None
        wait = exc.delay if exc.delay is not None else self.first_delay * 2.0**d.retries
        if wait > self.max_delay:
            return None  # a long Retry-After: the nak carries it, the worker moves on
        d.retries += 1
        self._m_retry.inc()
        self.log.warning(
            "retrying in place in %.2fs (retry %d/%d, delivery %d): %s", wait, d.retries,
            self.retry.in_place, d.deliveries, exc.message, extra=self._context(d, exc.code),
        )
        return wait

    def _hold(self, d: Delivery, exc: UnavailableError) -> float | None:
        now = time.monotonic()
        if d.held is not None and exc.hold_limit is not None \
                and now - d.held_since >= exc.hold_limit:
            self.log.error(
                "held %.1fs, the limit for %s: dead-lettering: %s", now - d.held_since,
                exc.reason, exc.message, extra=self._context(d, exc.code),
            )
            return None
        wait = min(self.first_delay * 2.0 ** min(d.holds, 30), self.max_delay)
        if d.held is not None and exc.hold_limit is not None:  # last round on the limit
            wait = min(wait, max(exc.hold_limit - (now - d.held_since), 0.0))
        if d.held is None and exc.hold_limit is not None and not self._may_hold(d, exc):
            return None
        d.holds += 1
        if d.held is None:
            d.held = exc.reason
            d.held_since = now
            self._m_hold.inc()
            m = self.metrics
            m.held.labels(m.stage, self._route, exc.reason).inc()
            bound = ("never dead-lettered for this" if exc.hold_limit is None
                     else f"dead-lettered after {exc.hold_limit:g}s")
            self.log.warning("holding on its last delivery (%s): %s", bound,
                             exc.message, extra=self._context(d, exc.code))
        else:
            self.log.info("still held (round %d), again in %.2fs: %s", d.holds, wait,
                          exc.message, extra=self._context(d, exc.code))
        return wait

    def _may_hold(self, d: Delivery, exc: UnavailableError) -> bool:
        """Room for one more bounded hold of ``d``'s workspace (then it is counted)."""
        ws = last_token(d.msg.subject)
        held = self._bounded_holds.get(ws, 0)
        cap = self.retry.held_per_workspace
        if cap is not None and held >= cap:
            self.log.error(
                "not held: %d deliveries of workspace %s are held already (the most for "
                "one workspace); dead-lettering: %s", held, ws, exc.message,
                extra=self._context(d, exc.code),
            )
            return False
        self._bounded_holds[ws] = held + 1
        d.held_workspace = ws
        return True

    def release(self, d: Delivery) -> None:
        """The delivery is settled: it is no longer held."""
        if d.held is not None:
            m = self.metrics
            m.held.labels(m.stage, self._route, d.held).dec()
            d.held = None
        if d.held_workspace is not None:
            left = self._bounded_holds.pop(d.held_workspace) - 1
            if left:
                self._bounded_holds[d.held_workspace] = left
            d.held_workspace = None

    async def settle(self, d: Delivery, exc: BaseException) -> None:
        """What a failure means for the message: ``term`` + dead letter, or ``nak``."""
        if isinstance(exc, PermanentError):
            await self._reject(d, exc.code, exc.message,
                               redact=isinstance(exc, RedactedError))
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

    async def _reject(self, d: Delivery, code: ErrorCode, message: str, *,
                      redact: bool = False) -> None:
        """Dead-letter once (``redact``: without the body), tell the client, then
        ``term``; if that fails, ``nak``."""
        msg = d.msg
        letter = dead_letter(msg, stage=self.stage, code=code, reason=message,
                             stream=self.stream, sequence=d.sequence, deliveries=d.deliveries,
                             max_payload=self.publisher.max_payload(), redact=redact)
        err = error_event(msg, d.event, stage=self.stage, code=code, message=message,
                          workspace_id=last_token(msg.subject), sequence=d.sequence)
        trace: Mapping[str, str] = d.span.headers
        m, stored = self.metrics, True
        try:
            await self.publisher.publish(letter, trace)
        except PermanentError as exc:  # the workspace's own share of MUMU_DLQ is full:
            stored = False  # counted and logged; the client still gets its error below
            m.dead_letters_over_share.labels(m.stage, code).inc()
            self.log.error(  # noqa: TRY400 - an expected refusal: no traceback
                "dead letter not stored, the workspace's share of the dead-letter stream is "
                "full (%s): %s", exc.message, message, extra=self._context(d, code))
        except StageError as exc:
            # never lost silently: MUMU_DLQ refuses when full (discard new), the original
            # stays unacked in its stream, and this is counted and logged as an error
            m.dead_letter_failures.labels(m.stage, code).inc()
            last = d.deliveries > self.max_deliver  # the consumer delivers it no more
            self.log.exception(
                "could not dead-letter (%s); the message stays unacked in %s at sequence %d, %s",
                exc.message, self.stream, d.sequence,
                "and is not delivered again: make room in MUMU_DLQ and `mumu replay` it"
                if last else "and will be retried", extra=self._context(d, code))
            await self.nak(d, nak_delay(self.backoff, d.deliveries))
            return
        try:
            if err is not None:
                await self.publisher.publish(err, trace)
        except PermanentError as exc:  # its workspace's error subject is at its limit
            self.log.warning("the error event was refused (%s); the dead letter is stored",
                             exc.message, extra=self._context(d, code))
        except TransientError:
            self.log.exception("could not publish the error event; will retry",
                               extra=self._context(d, code))
            await self.nak(d, nak_delay(self.backoff, d.deliveries))
            return
        await self._safely(d, "term", msg.term())
        d.outcome = Disposition.TERM
        if stored:
            m.dead_letters.labels(m.stage, code).inc()
            self.log.warning("dead-lettered: %s", message, extra=self._context(d, code))


async def nak_quietly(msg: Msg) -> None:
    """On cancellation (drain timeout): give the message back, whatever happens."""
    with contextlib.suppress(Exception):
        await msg.nak()
