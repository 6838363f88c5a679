"""The three relay chains `mumu bench runtime` compares: the stage runtime, a raw
nats-py baseline pipelined the same way, and FastStream. Each relays hop k → hop k+1."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mumu.bench.relay import BenchEvent, Relay
from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.runtime.process import run_stage
from mumu.settings import Settings

WS = "bench"
HOPS = 3


@contextlib.asynccontextmanager
async def runtime_chain(base: Settings, url: str, concurrency: int) -> AsyncIterator[None]:
    settings = base.model_copy(update={
        "nats": base.nats.model_copy(update={"url": url}),
        "stage": base.stage.model_copy(
            update={"concurrency": concurrency, "batch": concurrency, "fetch_timeout": 0.5}),
    })
    stop = asyncio.Event()
    events = [asyncio.Event() for _ in range(HOPS)]
    async with asyncio.TaskGroup() as tg:
        for hop in range(HOPS):
            tg.create_task(run_stage(Relay(hop), settings, stop, started=events[hop]))
        for started in events:
            await started.wait()
        try:
            yield
        finally:
            stop.set()


async def _pipelined(
    psub: Any, forward: Callable[[Msg], Coroutine[Any, Any, None]], concurrency: int,
    stop: asyncio.Event, ahead: int = 128,
) -> None:
    """At most ``concurrency`` messages in flight and ``ahead`` more fetched and waiting
    (the runtime's ``fetch_ahead``, in plain stream order here); fetch again once there
    is room for half the slots."""
    busy = 0
    waiting: deque[Msg] = deque()
    room = asyncio.Event()
    refill = max(1, concurrency // 2)
    limit = concurrency + ahead
    tasks: set[asyncio.Task[None]] = set()

    def start() -> None:
        nonlocal busy
        while waiting and busy < concurrency:
            busy += 1
            task = asyncio.create_task(forward(waiting.popleft()))
            tasks.add(task)
            task.add_done_callback(done)

    def done(task: asyncio.Task[None]) -> None:
        nonlocal busy
        tasks.discard(task)
        busy -= 1
        start()
        if limit - busy - len(waiting) >= refill:
            room.set()

    while not stop.is_set():
        free = limit - busy - len(waiting)
        if free < refill:
            room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), 0.5)
            continue
        try:
            msgs = await psub.fetch(batch=min(free, concurrency), timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        waiting.extend(msgs)
        start()
    for msg in waiting:  # like the runtime: what waits goes back
        with contextlib.suppress(Exception):
            await msg.nak()
    await asyncio.gather(*tasks)
    # like the runtime: drop the pull subscription, so a drain has nothing to wait for
    with contextlib.suppress(Exception):
        await psub.unsubscribe()


@contextlib.asynccontextmanager
async def raw_chain(_: Settings, url: str, concurrency: int) -> AsyncIterator[None]:
    """The baseline: plain nats-py pull consumers that publish (await PubAck), then ack.

    Each hop has its own connection, as each stage is its own process in production
    (and each runtime stage here has its own connection too). Pipelined like the
    runtime: at most ``concurrency`` messages in flight and 128 more fetched ahead (the
    runtime's default ``fetch_ahead``), the next fetch going out as soon as there is
    room for half of the slots, while the rest is still being handled.
    """
    stop = asyncio.Event()
    connections: list[NATS] = []

    async def relay(hop: int) -> None:
        nc = await nats.connect(url)
        connections.append(nc)
        js = nc.jetstream()
        durable = f"raw-relay{hop}"
        await js.add_consumer(
            STREAM_BENCH,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=BENCH_HOPS[hop].wildcard,
                max_ack_pending=10_000,
            ),
        )
        psub = await js.pull_subscribe_bind(durable=durable, stream=STREAM_BENCH)
        dst = BENCH_HOPS[hop + 1]

        async def forward(msg: Msg) -> None:
            event = BenchEvent.model_validate_json(msg.data)  # the same decode/encode work
            out = event.model_copy(update={"hop": event.hop + 1})
            await js.publish(
                dst.for_workspace(WS),
                out.model_dump_json().encode(),
                headers={h.MSG_ID: f"{event.event_id}:{dst.prefix}"},
            )
            await msg.ack()

        await _pipelined(psub, forward, concurrency, stop)

    async with asyncio.TaskGroup() as tg:
        for hop in range(HOPS):
            tg.create_task(relay(hop))
        try:
            yield
        finally:
            stop.set()
    for nc in connections:
        await nc.drain()


def require_faststream() -> None:
    """Fail before measuring anything when FastStream (the ``bench`` extra) is missing."""
    if importlib.util.find_spec("faststream") is None:
        raise RuntimeError(
            "the runtime benchmark compares against FastStream, which a production install "
            "does not carry: pip install 'mumu[bench]'"
        )


@contextlib.asynccontextmanager
async def faststream_chain(_: Settings, url: str, concurrency: int) -> AsyncIterator[None]:
    """The same relays as FastStream subscribers (pull, nack on error, same batch and workers).

    Measured to decide what the runtime is built on (see the README).
    """
    from faststream import AckPolicy
    from faststream.nats import JStream, NatsBroker, PullSub

    broker = NatsBroker(url, logger=None)
    stream = JStream(STREAM_BENCH, declare=False)

    def relay_to(dst: subjects.SubjectPattern) -> Any:
        async def relay(event: BenchEvent) -> None:
            out = event.model_copy(update={"hop": event.hop + 1})
            await broker.publish(
                out.model_dump_json().encode(),
                dst.for_workspace(WS),
                stream=STREAM_BENCH,
                headers={h.MSG_ID: f"{event.event_id}:{dst.prefix}"},
            )

        return relay

    for hop in range(HOPS):
        broker.subscriber(
            BENCH_HOPS[hop].wildcard,
            stream=stream,
            durable=f"fs-relay{hop}",
            pull_sub=PullSub(batch_size=concurrency, timeout=0.5),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_workers=concurrency,
        )(relay_to(BENCH_HOPS[hop + 1]))
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()
