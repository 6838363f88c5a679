"""Reading a stream for a replay: one ephemeral ordered consumer, messages handed to a sink.

The consumer is nats-py's ordered push consumer (flow control, heartbeats, recreated at
the next sequence after a gap), with no acks: the stages' durable consumers never see
it. Messages go to the sink from the subscription's own callback (nats-py's fastest
delivery path); the ack subject's numbers are parsed by ``broker.ack_subject`` rules
without building nats-py's metadata objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mumu.ops.selection import Selection

Put = Callable[[str, bytes, "dict[str, str] | None", int, int], Awaitable[None] | None]
"""A sink's ``put(subject, data, headers, stream sequence, stored at (Unix ns))``; a
coroutine function, or a plain one (called without an await: the dry-run's counting)."""

STALL = 10.0
"""Seconds without a message before a read that expects more gives up."""


@dataclass
class ScanResult:
    last_seq: int
    """The last stream sequence handed over or skipped (0: none)."""
    read: int
    taken: int
    complete: bool
    """False when stopped early (``stop``) or stalled."""


async def start_sequence(nc: NATS, stream: str, selection: Selection) -> int:
    """The first sequence to read: ``--from-seq``, or the first message at ``--since``."""
    start = selection.from_seq or 1
    since = selection.since_time
    if since is None:
        return start
    js = nc.jetstream()
    # the server resolves a start time to a sequence when it creates a consumer
    info = await js.add_consumer(stream, config=ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
        ack_policy=AckPolicy.NONE, inactive_threshold=10.0, mem_storage=True,
        num_replicas=1,
    ))
    try:
        first = (info.delivered.stream_seq if info.delivered else 0) + 1
    finally:
        with contextlib.suppress(nats.js.errors.Error):
            await js.delete_consumer(stream, info.name)
    return max(start, first)


def _numbers(reply: str) -> tuple[int, int, int]:
    """(stream sequence, stored at in Unix ns, pending) of a ``$JS.ACK`` reply."""
    t = reply.split(".")
    i = 5 if len(t) == 9 else 7
    return int(t[i]), int(t[i + 2]), int(t[i + 3])


class _Reader:
    """The subscription's callback: checks, hands over, knows when the read is done."""

    def __init__(self, selection: Selection, put: Put, end: int, result: ScanResult,
                 stop: asyncio.Event | None) -> None:
        self.put = put
        self.put_is_async = inspect.iscoroutinefunction(put)
        self.end = end
        self.until = selection.until_ns
        self.check = selection.needs_check
        self.wants = selection.wants
        self.result = result
        self.stop = stop
        self.done = asyncio.Event()
        self.idle = asyncio.Event()  # no message being handed over (a stop waits for it)
        self.idle.set()
        self.failure: BaseException | None = None

    async def on_msg(self, msg: Msg) -> None:
        if self.done.is_set():
            return
        self.idle.clear()
        result = self.result
        try:
            seq, stored, pending = _numbers(msg.reply)
            if seq > self.end or (self.until is not None and stored > self.until):
                self.done.set()
                return
            result.read += 1
            if not self.check or self.wants(msg.subject, msg.data, msg.headers):
                result.taken += 1
                if self.put_is_async:
                    await self.put(msg.subject, msg.data, msg.headers, seq, stored)  # type: ignore[misc]
                else:
                    self.put(msg.subject, msg.data, msg.headers, seq, stored)
            result.last_seq = seq
            if pending == 0 or seq >= self.end or (self.stop is not None and self.stop.is_set()):
                self.done.set()
        except Exception as exc:  # noqa: BLE001 - handed to the caller of scan
            self.failure = exc
            self.done.set()
        finally:
            self.idle.set()

    async def wait(self, stall: float) -> None:
        """Until the read is done, stopped (after the message in hand), or has seen
        nothing new for ``stall`` seconds."""
        result, stop = self.result, self.stop
        last = (result.read, time.monotonic())
        while not self.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), timeout=0.2)
            if stop is not None and stop.is_set():
                await self.idle.wait()
                self.done.set()
                return
            if result.read != last[0] or not self.idle.is_set():  # a slow put is no stall
                last = (result.read, time.monotonic())
            elif time.monotonic() - last[1] > stall:
                result.complete = False
                raise RuntimeError(f"the read stalled: nothing for {stall:.0f}s after "
                                   f"sequence {result.last_seq}")


async def scan(
    nc: NATS, stream: str, selection: Selection, put: Put, *,
    start: int, stop: asyncio.Event | None = None, stall: float = STALL,
    result: ScanResult | None = None, on_total: Callable[[int], None] | None = None,
    headers_only: bool = False, filters: list[str] | None = None,
) -> ScanResult:
    """Hand every selected message of ``stream`` from ``start`` to ``put``, in order, up
    to ``--to-seq`` / ``--until`` or the last message stored when the read began.

    ``result`` is updated as messages go (a progress bar reads it); ``on_total`` is told
    how many messages the ordered consumer has to deliver. ``headers_only``: bodies stay
    on the server (``Nats-Msg-Size`` says how big each one is); ``filters``: narrower
    server-side filters than the selection's own (the inputs of a ``--to-stage``)."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    end = info.state.last_seq
    if selection.to_seq is not None:
        end = min(end, selection.to_seq)
    if result is None:
        result = ScanResult(last_seq=start - 1, read=0, taken=0, complete=True)
    if start > end or info.state.messages == 0:
        return result
    reader = _Reader(selection, put, end, result, stop)
    filters = filters or selection.server_filters()
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
        filter_subjects=filters if len(filters) > 1 else None,
        headers_only=headers_only or None,
    )
    sub = await js.subscribe(
        filters[0] if len(filters) == 1 else "", stream=stream, cb=reader.on_msg,
        ordered_consumer=True, config=config, idle_heartbeat=2.0,
    )
    try:
        now = await sub.consumer_info()
        sent = now.delivered.consumer_seq if now.delivered else 0
        if on_total is not None:  # still to deliver + delivered already, at one moment
            on_total((now.num_pending or 0) + (sent or 0))
        if not now.num_pending and not sent:
            return result  # nothing selected, nothing delivered
        await reader.wait(stall)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):  # else the server drops it once idle
            await js.delete_consumer(stream, sub._consumer)  # the current one (after resets)
    if reader.failure is not None:
        raise reader.failure
    if stop is not None and stop.is_set() and result.last_seq < end:
        result.complete = False
    return result
