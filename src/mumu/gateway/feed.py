"""Reading ``MUMU_RESULTS`` in stream order: the live feed and the bounded replay.

The live feed is an ephemeral push consumer without acks. We keep the last stream
sequence we saw ourselves, so a gap (a slow-consumer drop, a reconnect, a lost
heartbeat) recreates the consumer at ``last + 1``: nothing is lost and nothing is
replayed twice. On a ``DirectClient`` (the gateway's) results are handled from the
connection's read loop (``broker/direct.py``); on a plain client its subscription
buffers at most ``LIVE_PENDING_BYTES``: past that NATS drops, the gap is seen and the
consumer recreated.

A replay is an ephemeral *pull* consumer read in bounded batches at its reader's pace
(``pull.PullReader``), so a slow reader costs bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mumu.broker.ack_subject import ack_fields, feed_position, is_ack_subject
from mumu.broker.direct import DirectClient
from mumu.contracts import subjects
from mumu.gateway.pull import ConsumerGoneError, PullReader

log = logging.getLogger("mumu.gateway.feed")

RESULT_PATTERNS = (
    subjects.TRANSCRIPT_PARTIAL,
    subjects.TRANSCRIPT_FINAL,
    subjects.STREAM_ENDED,
    subjects.ANSWER_DELTA,
    subjects.ANSWER_FINAL,
    subjects.ERROR,
)
HEARTBEAT = 2.0
LAST_CONSUMER_SEQ = "Nats-Last-Consumer"
"""Header of a JetStream idle heartbeat: the last consumer sequence it delivered."""
LIVE_PENDING_BYTES = 64 * 1024 * 1024
LIVE_PENDING_MSGS = 200_000
"""What the live feed's subscription may hold undispatched (the event loop fell behind);
past it NATS drops, the feed sees the gap and re-subscribes from its last sequence."""


def result_filters(workspace_id: str | None = None) -> list[str]:
    """Filter subjects of every client-visible event (of one workspace, or all)."""
    if workspace_id is None:
        return [p.wildcard for p in RESULT_PATTERNS]
    return [p.for_workspace(workspace_id) for p in RESULT_PATTERNS]


def _config(
    inbox: str, start: int, filters: list[str], since: datetime | None = None
) -> ConsumerConfig:
    """From sequence ``start``, or (``since``) from the first message stored at or after
    that time."""
    by_time = since is not None
    return ConsumerConfig(
        description="mumu gateway results feed",
        deliver_subject=inbox,
        deliver_policy=DeliverPolicy.BY_START_TIME if by_time else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=None if by_time else max(start, 1),
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        max_deliver=1,
        filter_subjects=filters,
        idle_heartbeat=HEARTBEAT,
        flow_control=False,
        inactive_threshold=60.0,
        mem_storage=True,
        num_replicas=1,
    )


async def last_sequence(nc: NatsClient) -> int:
    info = await nc.jetstream().stream_info(subjects.STREAM_RESULTS)
    return int(info.state.last_seq)


OnResult = Callable[[int, str, bytes, float], Awaitable[None]]
"""``(stream sequence, subject, body, stored at)`` of one result."""


class LiveFeed:
    """Every new result, in order, handed to ``on_message(sequence, subject, data,
    stored_at)``."""

    def __init__(self, nc: NatsClient, on_message: OnResult) -> None:
        self._nc = nc
        self._on_message = on_message
        self.last_seq = 0
        self._expect_cseq = 1
        self._consumer: str | None = None
        self._sub: Any = None
        self._seen = time.monotonic()
        self._resetting = asyncio.Lock()
        self._needs_reset = asyncio.Event()

    async def start(self) -> None:
        self.last_seq = await last_sequence(self._nc)
        await self._create()

    async def _create(self) -> None:
        js = self._nc.jetstream()
        inbox = self._nc.new_inbox()
        self._expect_cseq = 1
        self._sub = await self._nc.subscribe(
            inbox, cb=self._receive, pending_msgs_limit=LIVE_PENDING_MSGS,
            pending_bytes_limit=LIVE_PENDING_BYTES,
        )
        if isinstance(self._nc, DirectClient):
            self._nc.direct(self._sub, self._deliver)
        info = await js.add_consumer(
            subjects.STREAM_RESULTS, config=_config(inbox, self.last_seq + 1, result_filters())
        )
        self._consumer = info.name
        self._seen = time.monotonic()

    async def _drop(self) -> None:
        sub, consumer, self._sub, self._consumer = self._sub, self._consumer, None, None
        if sub is not None:
            if isinstance(self._nc, DirectClient):
                self._nc.undirect(sub)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self._nc.jetstream().delete_consumer(subjects.STREAM_RESULTS, consumer)

    async def _receive(self, msg: Msg) -> None:
        """What nats-py's own path delivers: status messages, and on a plain client every
        result."""
        if is_ack_subject(msg.reply):
            await self._deliver(msg.subject, msg.reply, msg.data)
            return
        self._seen = time.monotonic()
        # a status message: a heartbeat names the last message the consumer sent, and one
        # we never got was dropped (the subscription's pending limit) with nothing after it
        sent = (msg.headers or {}).get(LAST_CONSUMER_SEQ, "")
        if sent.isdigit() and int(sent) >= self._expect_cseq and not self._needs_reset.is_set():
            log.warning("results feed lost messages after %d; re-subscribing", self.last_seq)
            self._needs_reset.set()

    async def _deliver(self, subject: str, reply: str, data: bytes) -> None:
        """One result (``reply``: its ``$JS.ACK`` subject, its position)."""
        self._seen = time.monotonic()
        position = feed_position(reply)
        if position is None:
            return
        seq, cseq, stamp = position
        if cseq != self._expect_cseq:
            if not self._needs_reset.is_set():
                log.warning("results feed gap after %d; re-subscribing", self.last_seq)
            self._needs_reset.set()
            return
        self._expect_cseq += 1
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        try:
            await self._on_message(seq, subject, data, stamp)
        except Exception:
            log.exception("dispatching result %d failed", seq)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch for gaps and silence; recreate the consumer at ``last_seq + 1``."""
        while not stop.is_set():
            waiters = {asyncio.ensure_future(self._needs_reset.wait()),
                       asyncio.ensure_future(stop.wait())}
            _, pending = await asyncio.wait(
                waiters, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if stop.is_set():
                break
            silent = time.monotonic() - self._seen > 3 * HEARTBEAT
            if (self._needs_reset.is_set() or silent) and self._nc.is_connected:
                self._needs_reset.clear()
                await self._drop()
                try:
                    await self._create()
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                    log.warning("results feed: could not re-subscribe: %r", exc)
                    self._needs_reset.set()
                    await asyncio.sleep(0.5)
        await self._drop()


REPLAY_INACTIVE = 60.0
"""Seconds without a fetch after which JetStream removes a replay's consumer (its client
read nothing for that long); the replay then makes another from where it is."""


def _replay_config(start: int, filters: list[str], since: datetime | None) -> ConsumerConfig:
    """A pull consumer: JetStream sends only what a fetch asks for."""
    by_time = since is not None
    return ConsumerConfig(
        description="mumu gateway replay",
        deliver_policy=DeliverPolicy.BY_START_TIME if by_time else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=None if by_time else max(start, 1),
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        max_deliver=1,
        filter_subjects=filters,
        max_waiting=4,
        inactive_threshold=REPLAY_INACTIVE,
        mem_storage=True,
        num_replicas=1,
    )


async def replay(
    nc: NatsClient, workspace_id: str, after: int, idle: float = 5.0,
    since: datetime | None = None,
) -> AsyncIterator[tuple[int, Msg]]:
    """The workspace's results with sequence > ``after`` (or stored at or after ``since``)
    that exist now, in order.

    Read at the caller's pace from a pull consumer: the next batch is fetched only when
    the caller has taken the last one, so a slow caller (a socket whose client reads
    slowly) holds at most one batch here (``pull.BATCH`` messages, ``pull.MAX_BYTES``).
    """
    js = nc.jetstream()
    filters = result_filters(workspace_id)
    consumer: str | None = None
    try:
        info = await js.add_consumer(
            subjects.STREAM_RESULTS, config=_replay_config(after + 1, filters, since))
        consumer, last, expect = info.name, after, 1
        if not info.num_pending:
            return
        async with PullReader(nc, subjects.STREAM_RESULTS, consumer, idle=idle) as reader:
            while True:
                try:
                    batch = await reader.next_batch()
                except ConsumerGoneError:
                    if expect == 1:  # gone again before it delivered anything
                        raise
                    # the caller took longer than the consumer's inactive threshold
                    # (its client read nothing for that long): go on from where we are
                    info = await js.add_consumer(
                        subjects.STREAM_RESULTS, config=_replay_config(last + 1, filters, None))
                    consumer, expect = info.name, 1
                    reader.bind(consumer)
                    if not info.num_pending:
                        return
                    continue
                batch.reverse()
                while batch:
                    msg = batch.pop()
                    _, seq, cseq, _, pending = ack_fields(msg.reply)
                    if cseq != expect:
                        raise RuntimeError("replay lost messages; resume again")
                    expect, last = expect + 1, seq
                    yield seq, msg
                    if pending == 0:
                        return
    finally:
        if consumer is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(subjects.STREAM_RESULTS, consumer)
