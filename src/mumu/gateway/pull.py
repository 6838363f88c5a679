"""Reading one JetStream pull consumer in bounded batches, at the reader's pace.

The next batch is asked for only when the reader has taken every message of the last
one, so what waits in this process for one reader is at most one batch: ``batch``
messages and ``max_bytes`` bytes (a single message larger than that is fetched on its
own). A push consumer without flow control, by contrast, sends a slow reader's whole
backlog into the process at once.

Each request (``$JS.API.CONSUMER.MSG.NEXT``) gets its own reply subject under one
wildcard subscription, so a status JetStream sends after a full batch (``409 Batch
Completed``) is never taken for the end of the next one.
"""

from __future__ import annotations

import contextlib
import json
from types import TracebackType

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mumu.broker.ack_subject import ack_fields, is_ack_subject

BATCH = 64
"""Most messages one replay holds in this process."""
MAX_BYTES = 128 * 1024
"""Most bytes one replay holds in this process (beyond one larger message)."""
_STATUS = "Status"
_DESCRIPTION = "Description"
_ENDS_REQUEST = {"404", "408", "409"}
"""No messages, request expired, batch completed or size limit reached: the request is
over (other 409s, e.g. a deleted consumer, end the replay)."""
_ENDS_BATCH = ("Batch Completed", "Message Size Exceeds MaxBytes", "Exceeded MaxRequestMaxBytes")


class ConsumerGoneError(RuntimeError):
    """The consumer no longer exists (JetStream removed it after its inactive threshold
    without a fetch, or someone deleted it)."""


class PullReader:
    """Batches of one consumer; ``async with`` opens and closes its inbox."""

    def __init__(
        self, nc: NatsClient, stream: str, consumer: str, *, idle: float,
        batch: int = BATCH, max_bytes: int = MAX_BYTES,
    ) -> None:
        self._nc = nc
        self._stream = stream
        self._next = ""
        self.bind(consumer)
        self._inbox = nc.new_inbox()
        self._idle = idle
        self.batch = batch
        self.max_bytes = max_bytes
        self._requests = 0
        self._sub: Subscription | None = None

    def bind(self, consumer: str) -> None:
        """Read ``consumer`` from now on (one made again after ``ConsumerGoneError``)."""
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer}"

    async def __aenter__(self) -> PullReader:
        # the limits are never reached (one batch at a time); they say what one batch is
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*", pending_msgs_limit=self.batch + 8,
            pending_bytes_limit=self.max_bytes + max(self._nc.max_payload, 1 << 20) + 65_536,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def next_batch(self) -> list[Msg]:
        """The next messages, at least one; ``TimeoutError`` when JetStream sends none
        within ``idle`` seconds, ``RuntimeError`` when it ends the consumer."""
        got = await self._request(self.max_bytes)
        if not got:  # the next message alone is larger than a batch: fetch it on its own
            got = await self._request(None)
        if not got:
            raise TimeoutError(f"no message from JetStream for {self._idle:g} s")
        return got

    async def _request(self, max_bytes: int | None) -> list[Msg]:
        assert self._sub is not None, "use PullReader in `async with`"
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        ask: dict[str, int] = {"batch": self.batch if max_bytes else 1,
                               "expires": int(self._idle * 1e9)}
        if max_bytes:
            ask["max_bytes"] = max_bytes
        await self._nc.publish(self._next, json.dumps(ask).encode(), reply=reply)
        got: list[Msg] = []
        while len(got) < ask["batch"]:
            try:
                msg = await self._sub.next_msg(timeout=self._idle + 2.0)
            except nats.errors.TimeoutError as exc:
                raise TimeoutError(f"no message from JetStream for {self._idle:g} s") from exc
            if is_ack_subject(msg.reply):
                got.append(msg)
                if ack_fields(msg.reply).pending == 0:
                    break  # nothing more is stored for this consumer: do not wait for it
                continue
            if msg.subject != reply:  # the late status of an earlier request
                continue
            headers = msg.headers or {}
            status, description = headers.get(_STATUS, ""), headers.get(_DESCRIPTION, "")
            if status == "100":  # a heartbeat
                continue
            if status in _ENDS_REQUEST and (status != "409" or description in _ENDS_BATCH):
                break
            if status == "503" or description == "Consumer Deleted":  # no responders
                raise ConsumerGoneError(f"JetStream has no consumer for {self._next}")
            raise RuntimeError(f"JetStream ended the read: {status} {description}".strip())
        return got
