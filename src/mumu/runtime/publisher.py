"""Publishing a stage's outputs: every one acknowledged by JetStream before the input is.

One output goes as a JetStream publish awaiting its PubAck. Many outputs of a batch
route go as JetStream **atomic batches** (nats-server 2.12+, ADR-50): core publishes
carrying ``Nats-Batch-Id``/``Nats-Batch-Sequence``, the last one ``Nats-Batch-Commit``,
and one PubAck for the whole batch, which the server stores all or nothing. A batch
the server refuses (a stream without ``allow_atomic``, an older server, a message id
it already holds because this is a redelivery, outputs spanning streams) is published
again one message at a time, each deduplicated by its ``Nats-Msg-Id``; so the fast
path never changes what ends up stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import PubAck

from mumu.contracts import headers as h
from mumu.contracts.subjects import SHORT_LIVED
from mumu.runtime.errors import PermanentError, TransientError
from mumu.runtime.messages import Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.result_budget import ResultBudget

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
LEADERLESS_FOR = 30.0
"""Seconds an output's publish is retried in place while its stream answers nothing (no
responders: no stream leader during an election; no PubAck) before the input is nak'ed.
In place, because a nak sent while the input's consumer is electing a leader of its own
can be lost: the input would then wait out the whole ack_wait before it comes back. The
consumer's heartbeat keeps the input alive meanwhile, and the retries carry the same
``Nats-Msg-Id``, so a publish stored before its PubAck was lost is not stored twice."""
RETRY_FIRST, RETRY_MAX = 0.25, 2.0
ATOMIC_BATCH_MAX = 500
"""Messages per atomic batch (nats-server allows 1,000 by default)."""
ATOMIC_RETRY_AFTER = 60.0
"""Seconds without trying atomic batches after the server refused one for a reason other
than a duplicate (a stream without ``allow_atomic``, a server before 2.12): otherwise
every batch would be published twice."""
DUPLICATE_IN_BATCH = 10201
STORE_FAILED = 10077
"""JetStream's code of a refused store: ``maximum messages per subject exceeded`` (a
stream with ``discard_new_per_subject``: the workspace at its own limit) shares it with a
whole stream full (``maximum messages exceeded``, ``maximum bytes exceeded``)."""
PER_SUBJECT = "per subject"

Traced = tuple[Outbound, Mapping[str, str]]
"""An output and the trace headers of the input it answers."""


class Publisher:
    """``live_ttl``: seconds an output on a ``SHORT_LIVED`` subject (a partial, a delta)
    stays in its stream (the ``Nats-TTL`` header); ``None``: as long as the stream keeps any.
    ``budget``: the bytes each workspace may put in ``MUMU_RESULTS`` (``result_budget``),
    spent before a transcript or answer is published."""

    def __init__(self, nc: NATS, metrics: StageMetrics, live_ttl: int | None = None, *,
                 budget: ResultBudget | None = None) -> None:
        self._nc = nc
        self._live_ttl = live_ttl
        self._budget = budget
        self._js = nc.jetstream()
        self._m_atomic = metrics.output_batches.labels(metrics.stage, "atomic")
        self._m_one_by_one = metrics.output_batches.labels(metrics.stage, "one_by_one")
        self._atomic_off_until = 0.0
        self._m_retries = metrics.publish_retries.labels(metrics.stage)

    def _headers(self, out: Outbound, trace: Mapping[str, str]) -> dict[str, str]:
        headers = {**out.headers, **trace, h.MSG_ID: out.msg_id}
        if self._live_ttl is not None and any(p.matches(out.subject) for p in SHORT_LIVED):
            headers.setdefault(h.TTL, str(self._live_ttl))
        return headers

    def max_payload(self) -> int:
        """The largest message (headers + body) the connected server accepts."""
        return int(self._nc.max_payload)

    async def _spend(self, out: Outbound) -> None:
        if self._budget is not None:
            await self._budget.spend(out.subject, len(out.payload) + sum(
                len(k) + len(v) for k, v in out.headers.items()))

    async def publish(self, out: Outbound, trace_headers: Mapping[str, str]) -> PubAck:
        """Publish one output and wait for its PubAck (returned)."""
        await self._spend(out)
        return await self._publish(out, trace_headers)

    async def _publish(self, out: Outbound, trace_headers: Mapping[str, str]) -> PubAck:
        headers = self._headers(out, trace_headers)
        deadline = time.monotonic() + LEADERLESS_FOR
        pause = RETRY_FIRST
        while True:
            try:
                return await self._js.publish(
                    out.subject, out.payload, headers=headers, timeout=PUBLISH_TIMEOUT
                )
            except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
                if time.monotonic() + pause >= deadline:
                    raise TransientError(
                        "internal", f"publish to {out.subject} failed: {exc!r}") from exc
                if pause == RETRY_FIRST:
                    log.warning("publish to %s: no answer from its stream (%r); retrying in "
                                "place for up to %.0fs", out.subject, exc, LEADERLESS_FOR)
                self._m_retries.inc()
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                # a refusal's reason (a full stream, a subject at its limit) is in str()
                detail = str(exc) if isinstance(exc, nats.js.errors.APIError) else repr(exc)
                if getattr(exc, "err_code", None) == STORE_FAILED and PER_SUBJECT in detail:
                    # the workspace is at its own limit on this stream (docs/reliability.md):
                    # retrying within the next seconds cannot help and would re-run the model
                    raise PermanentError("internal", f"publish to {out.subject} refused, the "
                                         f"workspace is at its limit: {detail}") from exc
                raise TransientError(
                    "internal", f"publish to {out.subject} failed: {detail}") from exc

    async def publish_all(self, outputs: Sequence[Traced]) -> None:
        """Publish every output; returns once JetStream acknowledged all of them."""
        for out, _ in outputs:
            await self._spend(out)
        for start in range(0, len(outputs), ATOMIC_BATCH_MAX):
            chunk = outputs[start : start + ATOMIC_BATCH_MAX]
            if len(chunk) > 1:
                if time.monotonic() >= self._atomic_off_until and await self._atomic(chunk):
                    self._m_atomic.inc()
                    continue
                self._m_one_by_one.inc()
            await asyncio.gather(*(self._publish(out, trace) for out, trace in chunk))

    async def _atomic(self, chunk: Sequence[Traced]) -> bool:
        """One atomic batch; False when the server did not store it as one."""
        batch_id = uuid.uuid4().hex
        last = len(chunk)
        try:
            for seq, (out, trace) in enumerate(chunk, 1):
                headers = {**self._headers(out, trace),
                           h.BATCH_ID: batch_id, h.BATCH_SEQUENCE: str(seq)}
                if seq < last:
                    await self._nc.publish(out.subject, out.payload, headers=headers)
                    continue
                headers[h.BATCH_COMMIT] = "1"
                reply = await self._nc.request(
                    out.subject, out.payload, timeout=PUBLISH_TIMEOUT, headers=headers
                )
            ack = json.loads(reply.data)
        except (TimeoutError, ValueError, nats.errors.Error) as exc:
            log.debug("atomic batch not committed: %r", exc)
            return False
        if isinstance(ack, dict) and ack.get("batch") == batch_id and ack.get("count") == last:
            return True
        error = ack.get("error") if isinstance(ack, dict) else None
        if isinstance(error, dict) and error.get("err_code") == DUPLICATE_IN_BATCH:
            return False  # a redelivery: this batch goes one by one, the next one atomic
        log.info("no atomic batches for %.0fs: the server stored none (%s)",
                 ATOMIC_RETRY_AFTER, error or ack)
        self._atomic_off_until = time.monotonic() + ATOMIC_RETRY_AFTER
        return False
