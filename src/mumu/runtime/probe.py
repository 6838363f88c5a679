"""Pull requests that never wait on the server (``no_wait``): what a consumer has now.

nats-py's ``fetch`` follows a ``no_wait`` request that found too little with a lingering
one. A lingering request is what an idle replica leaves on the server (the consumer's
``num_waiting``, which ``runtime/sharing.py`` reads as idle capacity), so a worker whose
slots are all busy only ever probes like this: it asks for messages to queue (fetching
ahead for fair scheduling) without looking idle.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mumu.broker.roles import JS_API

STATUS = "Status"


class Prober:
    """``no_wait`` pull requests of one durable consumer, on an inbox of its own."""

    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self._nc = nc
        self._next = f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._got: deque[Msg] = deque()  # messages and status replies, in arrival order
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._got.append(msg)
        self._arrived.set()

    async def take(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages the consumer has now (fewer when it has fewer).

        Messages of an earlier request that came after its timeout are taken first."""
        msgs: list[Msg] = []
        self._drain(batch, msgs)
        if len(msgs) >= batch:
            return msgs
        request = {"batch": batch - len(msgs), "no_wait": True}
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(msgs) < batch:
            if not self._got:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            if self._drain(batch, msgs):
                break
        return msgs

    def _drain(self, batch: int, msgs: list[Msg]) -> bool:
        """Move arrived messages to ``msgs`` (up to ``batch``); True at a status reply
        (404 no messages, 408, 409), which ends the request it answers."""
        got = self._got
        while got and len(msgs) < batch:
            msg = got.popleft()
            if msg.headers and STATUS in msg.headers:
                return True
            msgs.append(msg)
        return False
