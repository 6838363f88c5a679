"""Giving fetched-ahead messages back when another replica is idle.

Fetching ahead (fair scheduling) lets one replica hold messages another replica could
start now: with answers of very different lengths, one replica may still have a queue
while another has nothing. While a route has messages waiting and no free slot, it
looks (every ``SHARE_PERIOD`` s) at its durable consumer's waiting pull requests; if
another replica is waiting, the newest waiting messages of the busiest workspaces go
back to the server (``nak`` without delay), which hands them to that replica at once.

Only first deliveries are given back, so a message loses at most one of its
``max_deliver`` deliveries this way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from mumu.runtime.settle import delivery_of, nak_quietly

if TYPE_CHECKING:
    from mumu.runtime.consumer import RouteWorker

SHARE_PERIOD = 0.25
"""Seconds between looks for idle replicas (only while messages wait and slots are full)."""


def _redelivered(item: tuple[Msg, float]) -> bool:
    return delivery_of(item[0])[0] > 1


async def share_with_idle_replicas(worker: RouteWorker, stop: asyncio.Event) -> None:
    js = worker.ctx.js
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SHARE_PERIOD)
        waiting = worker.waiting
        if stop.is_set() or not waiting.size or worker.busy < worker.concurrency:
            continue
        info = None
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
            info = await js.consumer_info(worker.route.stream, worker.durable)
        if info is None:  # a missed look; the next one comes soon
            continue
        others = (info.num_waiting or 0) - worker.lingering
        if others <= 0 or not waiting.size:
            continue
        # the idle replicas' share of the queue (at least a slot each): a burst that one
        # replica fetched is split, as if every replica had fetched its part
        share = max(others * worker.concurrency, waiting.size * others // (others + 1))
        shed = waiting.shed(min(waiting.size, share), _redelivered)
        worker.waiting_bytes -= sum(len(msg.data) for msg, _ in shed)
        for msg, _ in shed:
            await nak_quietly(msg)
        if shed:
            worker.ctx.log.info(
                "gave %d waiting messages back for %d idle replica pull requests",
                len(shed), others, extra={"stage": worker.ctx.name})
            worker.gave_back()
