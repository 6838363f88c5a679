"""The consume loop of one route: fetch ahead into a fair queue, hand messages to the
dispatcher round-robin by workspace with bounded concurrency, keep long work and waiting
messages alive (``in_progress``), watch the consumer's lag."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mumu.contracts.consumers import replay_filter
from mumu.contracts.subjects import last_token
from mumu.runtime.dispatch import Dispatcher
from mumu.runtime.fair import FairQueue
from mumu.runtime.fetch import Fetcher
from mumu.runtime.probe import Prober
from mumu.runtime.publisher import Publisher
from mumu.runtime.settle import Settler, nak_quietly
from mumu.runtime.sharing import share_with_idle_replicas
from mumu.runtime.stage import Route, StageContext, durable_of

UNAVAILABLE = (
    nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
)
"""Fetch failures that pass: a JetStream cluster electing a leader, a reconnect."""
UNAVAILABLE_PAUSE = 0.5


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
        # refill in batches: waiting for half the slots to free up keeps each pull
        # request worth its round trip instead of fetching one message at a time
        self._refill = max(1, min(self.batch, self.concurrency) // 2)
        ahead = route.fetch_ahead if route.fetch_ahead is not None else rt.fetch_ahead
        self._limit = self.concurrency + ahead  # messages held: handled + waiting
        self._ahead_bytes = rt.fetch_ahead_bytes
        self.waiting_bytes = 0  # payload bytes of the waiting messages
        self._room = asyncio.Event()
        self.busy = 0  # messages being handled
        self.waiting: FairQueue[tuple[Msg, float]] = FairQueue()  # fetched, no slot yet
        self._freed = asyncio.Event()  # a slot was released
        self.fetcher: Fetcher | None = None  # while consuming
        self._tg: asyncio.TaskGroup | None = None  # set while consuming
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = ctx.log
        self.settler = Settler(
            stage=ctx.name, stream=route.stream, publisher=publisher, metrics=ctx.metrics,
            backoff=self.backoff, max_deliver=self.max_deliver, log=ctx.log,
            route=self.name, retry=route.retry,
        )
        self.dispatch = Dispatcher(ctx, route, publisher, self.settler, name=self.name,
                                   max_deliver=self.max_deliver)

    def consumer_config(self) -> ConsumerConfig:
        subjects = list(self.route.subjects)
        replay = replay_filter(self.durable)  # `mumu replay --to-stage` reaches this one only
        if replay is not None and replay not in subjects:
            subjects.append(replay)
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
        ctx = self.ctx
        fetcher = self.fetcher = Fetcher(
            ctx.js, Prober(ctx.nc, self.route.stream, self.durable), self.route.stream,
            self.durable, batch=self.batch, timeout=self.fetch_timeout)
        await fetcher.open()
        drained = asyncio.Event()  # the heartbeat keeps long work alive through the drain
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._heartbeat(drained))
                tg.create_task(self._watch_lag(stop))
                tg.create_task(share_with_idle_replicas(self, stop))
                tg.create_task(self._wake_on(stop))
                while not stop.is_set():
                    room = self.room()
                    if room < self._refill:
                        self._room.clear()
                        await self._room.wait()
                        continue
                    try:
                        msgs = await fetcher.fetch(room, self.busy >= self.concurrency,
                                                   self._freed, stop)
                    except (nats.errors.TimeoutError, TimeoutError):
                        continue
                    except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                        break
                    except UNAVAILABLE as exc:
                        # a clustered consumer between leaders (its node died, an election
                        # runs) or a server being reconnected: wait, then fetch again
                        self._log.warning("consumer %s unavailable (%s); fetching again",
                                          self.durable, type(exc).__name__,
                                          extra={"stage": self.ctx.name})
                        await _sleep_or(stop, UNAVAILABLE_PAUSE)
                        continue
                    fetched = time.monotonic()
                    put = self.waiting.put
                    for msg in msgs:
                        put(last_token(msg.subject), (msg, fetched))
                        self.waiting_bytes += len(msg.data)
                    self._pump()
                self._tg = None  # no more starts; what waits goes back to the server
                await self._give_back()
                await self._drain(self._tasks)
                drained.set()
        finally:
            self._tg = None
            await fetcher.close()

    def room(self) -> int:
        """Messages the next fetch may ask for: up to the window, or only up to the free
        slots while the waiting messages hold ``fetch_ahead_bytes`` already."""
        held = self.busy + self.waiting.size
        if self.waiting_bytes >= self._ahead_bytes:
            return self.concurrency - held
        return self._limit - held

    def gave_back(self) -> None:
        """Waiting messages went back for idle replicas: no probe takes them back at once."""
        if self.fetcher is not None:
            self.fetcher.hold_off()
        if self.room() >= self._refill:
            self._room.set()

    @property
    def lingering(self) -> int:
        """1 while this worker's lingering pull request waits on the server."""
        return self.fetcher.lingering if self.fetcher is not None else 0

    def _pump(self) -> None:
        """Start waiting messages, round-robin by workspace, while slots are free."""
        tg, waiting = self._tg, self.waiting
        if tg is None or not waiting.size:
            return
        if self.route.batch_handler is None:
            handle = self.dispatch.handle
            while waiting.size and self.busy < self.concurrency:
                msg, since = waiting.take()
                self.waiting_bytes -= len(msg.data)
                self._spawn(tg, handle(msg, since), 1)
            return
        free = self.concurrency - self.busy
        if free < self._refill and self.busy:
            return  # a batch worth its round trip, unless the route is idle
        taken = [waiting.take() for _ in range(min(self.batch, free, waiting.size))]
        self.waiting_bytes -= sum(len(m.data) for m, _ in taken)
        slots = _Slots(self, len(taken))
        work = self.dispatch.handle_batch([m for m, _ in taken], slots.release,
                                          since=min(t for _, t in taken))
        self._spawn(tg, work, len(taken), slots)

    async def _give_back(self) -> None:
        """Stopping: messages still waiting for a slot go back to the server at once."""
        self.waiting_bytes = 0
        for msg, _ in self.waiting.clear():
            await nak_quietly(msg)

    def _spawn(self, tg: asyncio.TaskGroup, work: Coroutine[Any, Any, None], messages: int,
               slots: _Slots | None = None) -> None:
        """Run ``work`` (handling ``messages`` messages) as a task of the worker; a batch's
        ``slots`` are given back one by one as its messages settle."""
        task = tg.create_task(work)
        self._tasks.add(task)
        self.busy += messages
        # a partial of one method (cheaper than a new closure with three cells per task)
        task.add_done_callback(partial(self._done, messages if slots is None else slots))

    def _done(self, messages: int | _Slots, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.free(messages if isinstance(messages, int) else messages.release_all())

    def free(self, messages: int) -> None:
        """``messages`` in-flight slots are free again: start what waits, fetch more."""
        self.busy -= messages
        if self.waiting.size:
            self._pump()
        self._freed.set()
        if self.room() >= self._refill:
            self._room.set()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._room.set()
        self._freed.set()

    async def _drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Stop fetching; give in-flight work ``drain_timeout``, then nak what is left."""
        if not tasks:
            return
        self._log.info("draining %d in-flight messages", len(tasks), extra={"stage": self.ctx.name})
        _, pending = await asyncio.wait(set(tasks), timeout=self.drain_timeout)
        for task in pending:
            task.cancel()

    async def _heartbeat(self, until: asyncio.Event) -> None:
        """``in_progress()`` for messages fetched longer than a third of ack_wait ago (being
        handled, or waiting for a slot)."""
        period = max(self.ack_wait / 3, 0.05)
        while not until.is_set():
            await _sleep_or(until, period)
            now = time.monotonic()
            held = [*self.dispatch.inflight.values(), *self.waiting.items()]
            for msg, since in held:
                if now - since >= period:
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


class _Slots:
    """The in-flight slots of one fetched batch, given back as its messages settle."""

    __slots__ = ("_left", "_worker")

    def __init__(self, worker: RouteWorker, messages: int) -> None:
        self._worker = worker
        self._left = messages

    def release(self) -> None:
        """One message of the batch is settled."""
        if self._left > 0:
            self._left -= 1
            self._worker.free(1)

    def release_all(self) -> int:
        """The batch is done: the slots not given back yet (the caller frees them)."""
        left, self._left = self._left, 0
        return left


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
