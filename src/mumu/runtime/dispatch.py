"""Handling fetched messages: build each ``Inbound``, call the handler, map the result to
a disposition. Retries in place and holds run here (``Settler.again`` decides), so the
message stays in flight (heart-beaten) and its delivery count does not move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from mumu.contracts.subjects import last_token
from mumu.logs import MessageLog, reset_context, set_context
from mumu.runtime.errors import Disposition, PermanentError
from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.publisher import Publisher, Traced
from mumu.runtime.replayed import handled_subject
from mumu.runtime.settle import Delivery, Settler, delivery_of, nak_quietly
from mumu.runtime.stage import Route, StageContext

BatchResults = Sequence[Sequence[Outbound] | BaseException]


class Dispatcher:
    """One route's handling of deliveries; ``inflight`` is what the heartbeat keeps alive."""

    def __init__(self, ctx: StageContext, route: Route, publisher: Publisher,
                 settler: Settler, *, name: str, max_deliver: int) -> None:
        self.route = route
        self.publisher = publisher
        self.settler = settler
        self.tracing = ctx.tracing
        self.max_deliver = max_deliver
        self._span_name = f"{ctx.name} {route.stream}"
        self._log = MessageLog(ctx.name, route.stream)  # the log context of each delivery
        m = ctx.metrics
        self._m_outcome = {d: m.messages.labels(m.stage, name, d.value) for d in Disposition}
        self._m_acked = self._m_outcome[Disposition.ACK]  # no enum hashing on the hot path
        self._m_latency = m.latency.labels(m.stage, name)
        self._m_redelivered = m.redeliveries.labels(m.stage, name)
        self.inflight: dict[int, tuple[Msg, float]] = {}
        m.track_inflight(self.inflight)

    def _parse(self, msg: Msg) -> BaseModel | None:
        if self.route.model is None:
            return None
        try:
            return self.route.model.model_validate_json(msg.data)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise PermanentError(
                "schema_violation", f"not a valid {self.route.model.__name__}: {detail}"
            ) from exc

    def _begin(self, msg: Msg) -> Delivery:
        """Bookkeeping as a message starts."""
        deliveries, sequence = delivery_of(msg)
        if deliveries > 1:
            self._m_redelivered.inc()
        self.inflight[id(msg)] = (msg, time.monotonic())
        span = self.tracing.start(self._span_name, msg.headers or {}, msg.subject)
        return Delivery(msg, deliveries, sequence, span)

    def _end(self, d: Delivery, started: float) -> None:
        if d.ended:
            return
        d.ended = True
        outcome = d.outcome or Disposition.NAK
        self.settler.release(d)
        self.inflight.pop(id(d.msg), None)
        self._m_latency.observe(time.perf_counter() - started)
        if outcome is Disposition.ACK:
            self._m_acked.inc()
            d.span.end()
        else:
            self._m_outcome[outcome].inc()
            d.span.end(outcome.value)

    def _inbound(self, d: Delivery) -> Inbound[Any]:
        """Checks the delivery count, validates the body; raises ``PermanentError``."""
        if d.deliveries > self.max_deliver:
            raise PermanentError(
                "max_deliver_exceeded",
                f"delivered {d.deliveries} times (limit {self.max_deliver})",
            )
        msg = d.msg
        subject = handled_subject(msg.subject, msg.headers or {}, self.route.subjects)
        d.inbound = Inbound(
            event=self._parse(msg), data=msg.data, headers=msg.headers or {},
            subject=subject, workspace_id=last_token(subject), stream=self.route.stream,
            sequence=d.sequence, deliveries=d.deliveries, emit=partial(self._emit, d),
        )
        return d.inbound

    async def _emit(self, d: Delivery, out: Outbound) -> None:
        """``Inbound.emit`` of delivery ``d``: publish now, count it for the retry rule."""
        await self.publisher.publish(out, d.span.headers)
        d.emitted += 1

    async def handle(self, msg: Msg) -> None:
        assert self.route.handler is not None
        started = time.perf_counter()
        d = self._begin(msg)
        # every line logged while handling it carries its workspace, trace id, sequence
        logged = set_context(self._log, d)
        try:
            inbound = self._inbound(d)
            while True:
                d.emitted = 0
                try:
                    for out in await self.route.handler(inbound):
                        await self.publisher.publish(out, d.span.headers)
                except Exception as exc:  # mapped to a disposition on purpose
                    wait = self.settler.again(d, exc)
                    if wait is None:
                        raise
                    await asyncio.sleep(wait)
                    continue
                await self.settler.ack(d)
                if d.outcome is Disposition.ACK:
                    await self._after_ack(d, inbound)
                return
        except asyncio.CancelledError:
            await nak_quietly(msg)
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to an ack outcome on purpose
            await self.settler.settle(d, exc)
        finally:
            self._end(d, started)
            reset_context(logged)

    async def _after_ack(self, d: Delivery, inbound: Inbound[Any]) -> None:
        if self.route.after_ack is None:
            return
        try:
            await self.route.after_ack(inbound)
        except Exception as exc:  # noqa: BLE001 - the message is settled; only say so
            self.settler.log.warning("clean-up after ack failed: %r", exc, extra={
                "stage": self.settler.stage, "subject": d.msg.subject, "seq": d.sequence,
                "request_id": inbound.request_id})

    async def handle_batch(self, msgs: Sequence[Msg],
                           release: Callable[[], None] | None = None) -> None:
        """A batch route: one handler call for the fetched batch, its outputs published
        together (atomic batches), then each input acked; failures settle one by one;
        held deliveries go round again (alone) until they succeed or their hold ends.

        Each delivery is done with (``release``: its in-flight slot is free again, the
        heartbeat stops) as soon as it is settled, so a held delivery keeps only itself
        in flight, never the rest of its batch."""
        started = time.perf_counter()
        batch = [self._begin(msg) for msg in msgs]

        def end(d: Delivery) -> None:
            if not d.ended:
                self._end(d, started)
                if release is not None:
                    release()

        try:
            for d in batch:
                try:
                    self._inbound(d)
                except PermanentError as exc:
                    await self.settler.settle(d, exc)
                    end(d)
            ready = [d for d in batch if d.outcome is None]
            while ready:
                again = await self._round(ready)
                for d in ready:
                    if d.outcome is not None:
                        end(d)
                if again:
                    await asyncio.sleep(min(wait for _, wait in again))
                ready = [d for d, _ in again]
        except asyncio.CancelledError:
            for d in batch:
                if d.outcome is None:
                    await nak_quietly(d.msg)
            raise
        finally:
            for d in batch:
                end(d)

    async def _round(self, ready: list[Delivery]) -> list[tuple[Delivery, float]]:
        """One handler call for ``ready``; settles what it can, returns what goes again."""
        again: list[tuple[Delivery, float]] = []
        outputs: list[Traced] = []
        done: list[Delivery] = []
        for d in ready:
            d.emitted = 0
        for d, result in zip(ready, await self._call_batch(ready), strict=True):
            if not isinstance(result, BaseException):
                outputs.extend((out, d.span.headers) for out in result)
                done.append(d)
            elif (wait := self.settler.again(d, result)) is not None:
                again.append((d, wait))
            else:
                await self.settler.settle(d, result)
        await self._publish_then_ack(done, outputs)
        return again

    async def _publish_then_ack(self, done: list[Delivery], outputs: list[Traced]) -> None:
        try:
            await self.publisher.publish_all(outputs)
        except Exception as exc:  # noqa: BLE001 - then nothing of the batch is acked
            for d in done:
                await self.settler.settle(d, exc)
            return
        for d in done:
            await self.settler.ack(d)

    async def _call_batch(self, ready: list[Delivery]) -> BatchResults:
        assert self.route.batch_handler is not None
        try:
            results = await self.route.batch_handler([d.inbound for d in ready if d.inbound])
        except Exception as exc:  # noqa: BLE001 - the whole batch shares the failure
            return [exc] * len(ready)
        if len(results) != len(ready):  # a handler bug: retried, never half-acked
            bug = RuntimeError(f"batch handler gave {len(results)} results for {len(ready)}")
            return [bug] * len(ready)
        return results
