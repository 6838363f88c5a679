"""How a route asks its durable consumer for messages.

* The consumer was drained and a slot is free: one lingering pull request for **one**
  message (nats-py's ``fetch``; a request for more would hold the first message until
  it expires), then a ``no_wait`` probe for what else is there. The lingering request
  is the replica's "I am idle" on the server (``num_waiting``).
* The consumer was not drained: a ``no_wait`` probe (``runtime/probe.py``) for up to
  what the window has room for.
* The consumer was drained and every slot is busy: no lingering request (a busy replica
  must not look idle); a ``no_wait`` probe when a slot is released (at most every 50 ms)
  or every ``pause`` seconds (50 ms, doubling to 0.5 s while probes find nothing), so a
  new message of another workspace reaches the fair queue before the next slot frees.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mumu.runtime.probe import Prober

FIRST_PAUSE = 0.05
MAX_PAUSE = 0.5


class Fetcher:
    def __init__(self, js: JetStreamContext, prober: Prober, stream: str, durable: str, *,
                 batch: int, timeout: float) -> None:
        self._js = js
        self._prober = prober
        self._stream = stream
        self._durable = durable
        self._batch = batch
        self._timeout = timeout
        self._psub: Any = None
        self._idle = True  # the last request found the consumer drained
        self._pause = FIRST_PAUSE
        self._probed = 0.0  # loop time of the last probe of a saturated worker
        self.lingering = 0
        """1 while this worker's lingering pull request waits on the server."""

    async def open(self) -> None:
        self._psub = await self._js.pull_subscribe_bind(durable=self._durable,
                                                        stream=self._stream)
        await self._prober.open()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._prober.close()
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()

    def hold_off(self) -> None:
        """No probe of a saturated worker for ``FIRST_PAUSE`` from now (messages given back
        to idle replicas are theirs to take)."""
        self._probed = asyncio.get_running_loop().time()

    async def fetch(self, room: int, saturated: bool, freed: asyncio.Event,
                    stop: asyncio.Event) -> list[Msg]:
        """Up to ``room`` messages (``saturated``: every slot is busy; ``freed`` is set
        when a slot is released, and on ``stop``). Raises ``TimeoutError`` when a
        lingering request got nothing."""
        msgs: list[Msg] = []
        if self._idle and saturated:
            freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), self._pause)
            loop = asyncio.get_running_loop()
            wait = self._probed + FIRST_PAUSE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if stop.is_set():
                return msgs  # stopping: nothing more to fetch (and give back)
            self._probed = loop.time()
        elif self._idle:
            self.lingering = 1
            try:
                msgs.extend(await self._psub.fetch(batch=1, timeout=self._timeout))
            finally:
                self.lingering = 0
        ask = min(self._batch, room - len(msgs))
        more = await self._prober.take(ask, self._timeout) if ask > 0 else []
        self._idle = len(more) < ask
        self._pause = FIRST_PAUSE if msgs or more else min(self._pause * 2, MAX_PAUSE)
        msgs.extend(more)
        return msgs
