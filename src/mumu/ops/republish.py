"""Publishing selected messages again: pipelined, optionally rate-limited, to their
original subject or (``--to-stage``) to one stage's replay subject.

Publishes go out without waiting for each PubAck (nats-py ``publish_async``, at most
``window`` unacknowledged); ``acked_through`` is the last position whose publish and every
one before it JetStream acknowledged, which is what a checkpoint records. Each message
gets ``Mumu-Replay`` and a ``Nats-Msg-Id`` derived from its original id and the replay id,
so a resumed replay (same id) that publishes a message twice is deduplicated by the
stream, and a new replay is not swallowed by the original's duplicate window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from nats.aio.client import Client as NATS

from mumu.contracts import headers as h
from mumu.contracts.consumers import StageConsumer
from mumu.contracts.subjects import is_replay, last_token
from mumu.ops.batches import MAX, AtomicBatches, BatchRefusedError, Item, without_batch_headers
from mumu.stages.registry import STAGES

WINDOW = 4000
"""Publishes in flight at most (nats-py's own default)."""
ACK_TIMEOUT = 30.0
Entry = tuple[int, Item]
"""A message waiting for its batch: (position, (subject, body, headers))."""


class ReplayPublishError(RuntimeError):
    """JetStream refused a replayed message (stream full, no stream for the subject...)."""


def stage_consumers(stage: str) -> tuple[StageConsumer, ...]:
    """The durables of ``stage`` (``KeyError`` with the known names otherwise)."""
    return STAGES.spec(stage).consumers


def kept_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The original headers without the server's and publisher's own (``Nats-*``: batch,
    expectations, source markers), except the message TTL."""
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if not k.startswith("Nats-") or k == h.TTL}


class Republisher:
    def __init__(self, nc: NATS, *, replay_id: str, stage: str | None = None,
                 rate: float | None = None, window: int = WINDOW) -> None:
        self._js = nc.jetstream(publish_async_max_pending=window)
        self.replay_id = replay_id
        self.stage = stage
        self._consumers = stage_consumers(stage) if stage else ()
        self._targets: dict[str, StageConsumer | None] = {}
        self._interval = 1.0 / rate if rate else 0.0
        self._next_at = 0.0
        self._inflight: deque[tuple[int, asyncio.Future[Any] | None, list[Entry]]] = deque()
        # one stage's replay subjects are stored by one stream: atomic batches (not when
        # rate-limited: a batch would wait to fill)
        self._batches = AtomicBatches(nc) if stage and not rate else None
        self._batch: list[Entry] = []
        self._unacked = 0
        self.stream = ""
        """The stream the messages were read from (``Mumu-Replay-Source``)."""
        self.acked_through = 0
        self.published = 0
        self.max_in_flight = 0
        """The most publishes awaiting their PubAck at once (1: not pipelined)."""
        self.not_inputs: dict[str, int] = {}
        """Subjects skipped by ``--to-stage`` because the stage does not consume them."""

    def input_filters(self, workspace: str | None) -> list[str]:
        """The subjects the stage consumes (of ``workspace``): a whole-stream replay to a
        stage reads only those."""
        patterns = dict.fromkeys(p for c in self._consumers for p in c.inputs)
        return [p.for_workspace(workspace) if workspace else p.wildcard for p in patterns]

    def _consumer_of(self, subject: str) -> StageConsumer | None:
        family = subject.rpartition(".")[0]
        if family not in self._targets:
            self._targets[family] = next(
                (c for c in self._consumers if any(p.matches(subject) for p in c.inputs)), None)
        return self._targets[family]

    def target(self, subject: str, headers: dict[str, str] | None) -> tuple[str | None, str]:
        """(subject to publish on or None to skip, the original subject)."""
        original = subject
        if is_replay(subject) and headers and headers.get(h.REPLAY_SUBJECT):
            original = headers[h.REPLAY_SUBJECT]
        if self.stage is None:
            return subject, original
        consumer = self._consumer_of(original)
        if consumer is None:
            return None, original
        return consumer.replay.token(last_token(original)), original

    async def put(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int,
                  ts: int) -> None:
        """A message read from ``self.stream`` at ``seq`` (the scan's sink)."""
        await self.publish(subject, data, headers, stream=self.stream, seq=seq, position=seq)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None, *,
                      stream: str, seq: int, position: int) -> None:
        """Publish one message; ``position`` is what ``acked_through`` counts in."""
        target, original = self.target(subject, headers)
        if target is None:
            self.not_inputs[original] = self.not_inputs.get(original, 0) + 1
            await self._send_batch()  # what came before it is in flight before it
            self._inflight.append((position, None, []))
            await self._settle()
            return
        if self._interval:
            await self._pace()
        out = kept_headers(headers)
        source = f"{stream}:{seq}"
        base = (headers or {}).get(h.MSG_ID) or source
        out[h.MSG_ID] = f"{base}:replay:{self.replay_id}"
        out[h.REPLAY] = self.replay_id
        out[h.REPLAY_SOURCE] = source
        if target != original:
            out[h.REPLAY_SUBJECT] = original
        self.published += 1
        if self._batches is not None:
            self._batch.append((position, (target, data, out)))
            if len(self._batch) >= MAX:
                await self._send_batch()
        else:
            future = await self._js.publish_async(target, data, headers=out)
            self._inflight.append((position, future, []))
            self._unacked += 1
        await self._settle()
        self.max_in_flight = max(self.max_in_flight, self._unacked)

    async def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch or self._batches is None:
            return
        future = await self._batches.send([item for _, item in batch])
        self._inflight.append((batch[-1][0], future, batch))
        self._unacked += len(batch)

    async def _pace(self) -> None:
        now = time.monotonic()
        at = max(self._next_at, now)  # no burst to catch up after a pause
        if at > now:
            await asyncio.sleep(at - now)
        self._next_at = at + self._interval

    async def _settle(self) -> None:
        """Move ``acked_through`` past every leading publish that is acknowledged; a batch
        the server refused goes again message by message (a duplicate id inside it is
        then dropped by the stream alone)."""
        inflight = self._inflight
        while inflight:
            position, future, batch = inflight[0]
            if future is not None:
                if not future.done():
                    return
                error = None if future.cancelled() else future.exception()
                if future.cancelled() or error is not None:
                    if not isinstance(error, BatchRefusedError):
                        raise ReplayPublishError(
                            f"JetStream refused replayed message {position}: "
                            f"{'cancelled' if error is None else repr(error)}")
                    if not error.duplicate:
                        self._batches = None  # e.g. a stream without allow_atomic
                    inflight.popleft()
                    self._unacked -= len(batch)
                    await self._one_by_one(batch)
                    continue
            inflight.popleft()
            self._unacked -= max(len(batch), 1) if future is not None else 0
            self.acked_through = position

    async def _one_by_one(self, batch: list[Entry]) -> None:
        again: list[tuple[int, asyncio.Future[Any] | None, list[Entry]]] = []
        for position, (subject, data, headers) in batch:
            future = await self._js.publish_async(subject, data,
                                                  headers=without_batch_headers(headers))
            again.append((position, future, []))
        self._inflight.extendleft(reversed(again))
        self._unacked += len(again)

    async def finish(self, timeout: float = ACK_TIMEOUT) -> None:
        """Send what is buffered, then wait for every publish in flight to be acknowledged
        (or raise)."""
        await self._send_batch()
        while True:
            await self._settle()
            pending = [f for _, f, _ in self._inflight if f is not None and not f.done()]
            if not pending:
                return
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                await self._settle()
                raise ReplayPublishError(
                    f"{len(late)} replayed publishes were not acknowledged in {timeout:.0f}s")
