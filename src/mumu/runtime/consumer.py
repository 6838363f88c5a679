"""The consume loop of one route: fetch, handle with bounded concurrency, map to acks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ValidationError

from mumu.contracts.subjects import last_token
from mumu.runtime.errors import Disposition, PermanentError
from mumu.runtime.messages import Inbound, Outbound
from mumu.runtime.publisher import Publisher, Traced
from mumu.runtime.settle import (
    Delivery,
    Settler,
    delivery_of,
    nak_quietly,
)
from mumu.runtime.stage import Route, StageContext, durable_of


class RouteWorker:
    def __init__(self, ctx: StageContext, route: Route, publisher: Publisher) -> None:
        rt = ctx.settings.stage
        self.ctx = ctx
        self.route = route
        self.publisher = publisher
        self.durable = durable_of(ctx.name, route)
        self.concurrency = route.concurrency or rt.concurrency
        self.batch = route.batch or rt.batch
        self.fetch_timeout = rt.fetch_timeout
        self.ack_wait = route.ack_wait or rt.ack_wait
        self.max_deliver = rt.max_deliver
        self.backoff = rt.backoff
        self.drain_timeout = rt.drain_timeout
        self.name = route.stream.lower()
        self._span_name = f"{ctx.name} {route.stream}"
        m = ctx.metrics
        self._m_outcome = {d: m.messages.labels(m.stage, self.name, d.value) for d in Disposition}
        self._m_latency = m.latency.labels(m.stage, self.name)
        self._m_inflight = m.inflight.labels(m.stage)
        self._m_redelivered = m.redeliveries.labels(m.stage, self.name)
        self._inflight: dict[int, tuple[Msg, float]] = {}
        # refill in batches: waiting for half the slots to free up keeps each pull
        # request worth its round trip instead of fetching one message at a time
        self._refill = max(1, min(self.batch, self.concurrency) // 2)
        self._room = asyncio.Event()
        self._busy = 0  # messages being handled
        self._log = ctx.log
        self.settler = Settler(
            stage=ctx.name, stream=route.stream, publisher=publisher, metrics=ctx.metrics,
            backoff=self.backoff, max_deliver=self.max_deliver, log=ctx.log,
        )

    def consumer_config(self) -> ConsumerConfig:
        subjects = list(self.route.subjects)
        return ConsumerConfig(
            durable_name=self.durable,
            description=f"mumu stage {self.ctx.name}",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # no consumer BackOff on purpose: with one set, nats-server (2.12-2.15 measured)
            # holds a nak(delay) redelivery for its ack-wait timer (nak 0.4 s -> back after
            # 5.4 s on ack_wait 5 s), which breaks the explicit retry ladder above. A message
            # never acked comes back after ack_wait; the heartbeat keeps long work alive.
            # one more than ours: the runtime dead-letters on the last delivery itself,
            # and a message that crashed the process every time is caught on the extra one
            max_deliver=self.max_deliver + 1,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
            max_ack_pending=10_000,
            max_waiting=512,
        )

    async def ensure_consumer(self) -> None:
        js = self.ctx.js
        try:
            await js.stream_info(self.route.stream)
        except nats.js.errors.NotFoundError as exc:
            raise RuntimeError(
                f"stream {self.route.stream} does not exist: run `mumu streams apply`"
            ) from exc
        await js.add_consumer(self.route.stream, config=self.consumer_config())

    async def run(self, stop: asyncio.Event) -> None:
        js = self.ctx.js
        psub = await js.pull_subscribe_bind(durable=self.durable, stream=self.route.stream)
        tasks: set[asyncio.Task[None]] = set()
        drained = asyncio.Event()  # the heartbeat keeps long work alive through the drain
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat(drained))
                tg.create_task(self._watch_lag(stop))
                tg.create_task(self._wake_on(stop))
                while not stop.is_set():
                    free = self.concurrency - self._busy
                    if free < self._refill:
                        self._room.clear()
                        await self._room.wait()
                        continue
                    try:
                        msgs = await psub.fetch(
                            batch=min(self.batch, free), timeout=self.fetch_timeout
                        )
                    except (nats.errors.TimeoutError, TimeoutError):
                        continue
                    except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                        break
                    if self.route.batch_handler is not None:
                        self._spawn(tg, tasks, self._handle_batch(msgs), len(msgs))
                    else:
                        for msg in msgs:
                            self._spawn(tg, tasks, self._handle(msg), 1)
                await self._drain(tasks)
                drained.set()
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    def _spawn(self, tg: asyncio.TaskGroup, tasks: set[asyncio.Task[None]],
               work: Coroutine[Any, Any, None], messages: int) -> None:
        """Run ``work`` (handling ``messages`` messages) as a task of the worker."""
        task = tg.create_task(work)
        tasks.add(task)
        self._busy += messages

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self._busy -= messages
            if self.concurrency - self._busy >= self._refill:
                self._room.set()

        task.add_done_callback(done)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._room.set()

    async def _drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Stop fetching; give in-flight work ``drain_timeout``, then nak what is left."""
        if not tasks:
            return
        self._log.info("draining %d in-flight messages", len(tasks), extra={"stage": self.ctx.name})
        _, pending = await asyncio.wait(set(tasks), timeout=self.drain_timeout)
        for task in pending:
            task.cancel()

    async def _heartbeat(self, until: asyncio.Event) -> None:
        """``in_progress()`` for messages handled longer than a third of ack_wait."""
        period = max(self.ack_wait / 3, 0.05)
        while not until.is_set():
            await _sleep_or(until, period)
            now = time.monotonic()
            for msg, started in list(self._inflight.values()):
                if now - started >= period:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        m = self.ctx.metrics
        while not stop.is_set():
            with contextlib.suppress(Exception):
                info = await self.ctx.js.consumer_info(self.route.stream, self.durable)
                m.consumer_lag.labels(m.stage, self.durable).set(info.num_pending or 0)
                m.ack_pending.labels(m.stage, self.durable).set(info.num_ack_pending or 0)
            await _sleep_or(stop, 5.0)

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
        self._inflight[id(msg)] = (msg, time.monotonic())
        self._m_inflight.inc()
        span = self.ctx.tracing.start(self._span_name, msg.headers or {})
        return Delivery(msg, deliveries, sequence, span)

    def _end(self, d: Delivery, started: float) -> None:
        outcome = d.outcome or Disposition.NAK
        self._inflight.pop(id(d.msg), None)
        self._m_inflight.dec()
        self._m_outcome[outcome].inc()
        self._m_latency.observe(time.perf_counter() - started)
        d.span.end(None if outcome is Disposition.ACK else outcome.value)

    def _inbound(self, d: Delivery) -> Inbound[Any]:
        """Checks the delivery count, validates the body; raises ``PermanentError``."""
        if d.deliveries > self.max_deliver:
            raise PermanentError(
                "max_deliver_exceeded",
                f"delivered {d.deliveries} times (limit {self.max_deliver})",
            )
        trace_headers = d.span.headers

        async def emit(out: Outbound) -> None:
            await self.publisher.publish(out, trace_headers)

        d.inbound = Inbound(
            msg=d.msg, event=self._parse(d.msg), subject=d.msg.subject,
            workspace_id=last_token(d.msg.subject), stream=self.route.stream,
            sequence=d.sequence, deliveries=d.deliveries, emit=emit,
        )
        return d.inbound

    async def _handle(self, msg: Msg) -> None:
        assert self.route.handler is not None
        started = time.perf_counter()
        d = self._begin(msg)
        try:
            for out in await self.route.handler(self._inbound(d)):
                await self.publisher.publish(out, d.span.headers)
            await self.settler.ack(d)
        except asyncio.CancelledError:
            await nak_quietly(msg)
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to an ack outcome on purpose
            await self.settler.settle(d, exc)
        finally:
            self._end(d, started)

    async def _handle_batch(self, msgs: Sequence[Msg]) -> None:
        """A batch route: one handler call for the fetched batch, its outputs published
        together (atomic batches), then each input acked; failures settle one by one."""
        started = time.perf_counter()
        batch = [self._begin(msg) for msg in msgs]
        try:
            for d in batch:
                try:
                    self._inbound(d)
                except PermanentError as exc:
                    await self.settler.settle(d, exc)
            ready = [d for d in batch if d.outcome is None]
            outputs: list[Traced] = []
            for d, result in zip(ready, await self._call_batch(ready), strict=True):
                if isinstance(result, BaseException):
                    await self.settler.settle(d, result)
                else:
                    outputs.extend((out, d.span.headers) for out in result)
            await self._publish_then_ack([d for d in ready if d.outcome is None], outputs)
        except asyncio.CancelledError:
            for d in batch:
                if d.outcome is None:
                    await nak_quietly(d.msg)
            raise
        finally:
            for d in batch:
                self._end(d, started)

    async def _publish_then_ack(self, done: list[Delivery], outputs: list[Traced]) -> None:
        try:
            await self.publisher.publish_all(outputs)
        except Exception as exc:  # noqa: BLE001 - then nothing of the batch is acked
            for d in done:
                await self.settler.settle(d, exc)
            return
        for d in done:
            await self.settler.ack(d)

    async def _call_batch(self, ready: list[Delivery]
                          ) -> Sequence[Sequence[Outbound] | BaseException]:
        assert self.route.batch_handler is not None
        if not ready:
            return []
        try:
            results = await self.route.batch_handler([d.inbound for d in ready if d.inbound])
        except Exception as exc:  # noqa: BLE001 - the whole batch shares the failure
            return [exc] * len(ready)
        if len(results) != len(ready):  # a handler bug: retried, never half-acked
            bug = RuntimeError(f"batch handler gave {len(results)} results for {len(ready)}")
            return [bug] * len(ready)
        return results


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
