"""Pipelined JetStream atomic batches (nats-server 2.12+, ADR-50) for replays to one stage.

A batch is core publishes carrying ``Nats-Batch-Id``/``Nats-Batch-Sequence``, the last one
``Nats-Batch-Commit`` with a reply subject: one PubAck for the whole batch, stored all or
nothing. Batches are not awaited one by one: the commit's PubAck resolves a future, and
the next batch is sent meanwhile. Compared with one ``publish_async`` per message this
spares a reply subject, a future and a PubAck per message, which is what lets a replay
read and republish on one core about as fast as a plain publisher only publishes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h

MAX = 500
"""Messages per atomic batch (nats-server allows 1,000 by default)."""
DUPLICATE_IN_BATCH = 10201
"""A message of the batch has an id the stream already holds (a resumed replay)."""

Item = tuple[str, bytes, dict[str, str]]


class BatchRefusedError(RuntimeError):
    """The server did not store a batch; ``duplicate``: because of a known message id."""

    def __init__(self, detail: Any, *, duplicate: bool) -> None:
        super().__init__(f"atomic batch refused: {detail}")
        self.duplicate = duplicate


class AtomicBatches:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._waiting: dict[str, tuple[asyncio.Future[int], int]] = {}

    async def _reply_prefix(self) -> str:
        if not self._prefix:
            self._prefix = self._nc.new_inbox()
            await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        return self._prefix

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            return
        future, count = waiting
        if future.done():
            return
        try:
            ack = json.loads(msg.data) if msg.data else {}
        except ValueError:
            ack = {"error": msg.data[:200]}
        if isinstance(ack, dict) and ack.get("batch") == token and ack.get("count") == count:
            future.set_result(count)
            return
        error = ack.get("error") if isinstance(ack, dict) else ack
        duplicate = isinstance(error, dict) and error.get("err_code") == DUPLICATE_IN_BATCH
        future.set_exception(BatchRefusedError(error or ack or "no response", duplicate=duplicate))

    async def send(self, items: Sequence[Item]) -> asyncio.Future[int]:
        """Publish ``items`` as one atomic batch; the future resolves to their count once
        JetStream stored them (or fails with ``BatchRefusedError``)."""
        prefix = await self._reply_prefix()
        token = uuid.uuid4().hex
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, len(items))
        last = len(items)
        publish = self._nc.publish
        for seq, (subject, data, headers) in enumerate(items, 1):
            headers[h.BATCH_ID] = token
            headers[h.BATCH_SEQUENCE] = str(seq)
            if seq < last:
                await publish(subject, data, headers=headers)
            else:
                headers[h.BATCH_COMMIT] = "1"
                await publish(subject, data, reply=f"{prefix}.{token}", headers=headers)
        return future

    def forget(self) -> None:
        """Fail every batch still waiting (the connection is going away)."""
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(BatchRefusedError("not acknowledged", duplicate=False))
        self._waiting.clear()


def without_batch_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items()
            if k not in (h.BATCH_ID, h.BATCH_SEQUENCE, h.BATCH_COMMIT)}
