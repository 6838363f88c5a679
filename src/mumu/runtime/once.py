"""Outputs published at most once (``Outbound.once``: a request's final), even when the
input is redelivered after the stream's dedupe window.

``Nats-Msg-Id`` dedupes a republished output only inside the stream's
``duplicate_window`` (120 s). For an output marked ``once`` the runtime also keeps an
idempotency record in the workspace's KV bucket ``mumu-once-<ws>`` (created with the
workspace, ``broker/workspaces.py``), key ``<stage>.<msg_id>``:

1. ``create`` the key as ``claimed:<unix ns>`` before publishing (atomic: an existing
   key is read instead);
2. publish; on the PubAck, ``stored:<stream>:<seq>``.

A delivery that finds ``stored`` publishes nothing. One that finds only ``claimed`` (an
earlier delivery died between the two steps: it may or may not have published) looks
for the message id in the output stream, among the messages of the output's subject
stored since the claim (JetStream direct gets by subject and start time), and
publishes only if it is not there. The record expires with the bucket's max age (24 h,
as long as the input streams keep a message). When the bucket cannot be used (down,
full, missing), the output is published anyway, with the dedupe window as its only
guard, and a warning says so: a final is never lost for the sake of its record. The
bucket is the workspace's own, so a workspace whose finals fill it costs no other
workspace its records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from mumu.broker.roles import JS_API
from mumu.contracts import headers as h
from mumu.contracts.subjects import last_token, once_bucket
from mumu.runtime.messages import Outbound
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher

SCAN_LIMIT = 10_000
"""Most stored messages of the output's subject a recovery looks through; past that it
publishes (a possible duplicate rather than a lost final) and says so."""
CLOCK_MARGIN_NS = 60 * 10**9
"""The look starts this long before the claim: the claim's time is this process's clock,
the stream's timestamps are the server's (clocks a minute apart still find the copy)."""
LOOKUP_RETRY = 30.0
"""Seconds a workspace whose bucket could not be opened is not looked up again (its finals
are published unrecorded meanwhile): a missing bucket or grant costs one lookup (up to the
request timeout), not one per final."""
TIMEOUT = 2.0
"""Seconds a record's read or write may take (JetStream's default is 5): while the
bucket elects a leader (a node of a cluster died) each final waits this long at most
before it is published without its record."""
_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class BucketUnavailableError(Exception):
    """The workspace's bucket could not be opened a moment ago."""


class OnceRecords:
    """Publishes ``once`` outputs of one stage, guarded by their records in the
    workspaces' ``mumu-once-<ws>``."""

    def __init__(self, nc: NATS, stage: str, publisher: Publisher,
                 metrics: StageMetrics, log: logging.Logger) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=TIMEOUT)
        self._stage = stage
        self._publisher = publisher
        self._log = log
        self._buckets: dict[str, KeyValue] = {}
        """Workspace -> its bucket, once found (one lookup per workspace and process)."""
        self._retry_at: dict[str, float] = {}
        """Workspace -> when to look for its bucket again, after a lookup failed."""
        m = metrics
        self._count = {o: m.once.labels(m.stage, o)
                       for o in ("published", "already", "recovered", "unrecorded")}

    def key(self, out: Outbound) -> str:
        """The record's key in its workspace's bucket."""
        return f"{self._stage}.{out.msg_id}"

    async def publish(self, out: Outbound, trace: Mapping[str, str]) -> None:
        """Publish ``out`` unless its record says an earlier delivery did."""
        key = self.key(out)
        try:
            kv = await self._bucket(last_token(out.subject))
            claimed = await self._claim(kv, key)
        except (*_ERRORS, BucketUnavailableError) as exc:
            self._unrecorded(out, exc)
            await self._publisher.publish(out, trace)
            return
        if claimed is not None:
            if claimed.startswith("stored:"):
                self._already(out, claimed)
                return
            found = await self._stored_since(out, int(claimed.partition(":")[2] or 0))
            if found is not None:
                await self._mark(kv, key, found)
                self._count["recovered"].inc()
                self._already(out, found)
                return
        ack = await self._publisher.publish(out, trace)
        await self._mark(kv, key, f"stored:{ack.stream}:{ack.seq}")
        self._count["published"].inc()

    async def _bucket(self, workspace: str) -> KeyValue:
        kv = self._buckets.get(workspace)
        if kv is not None:
            return kv
        if time.monotonic() < self._retry_at.get(workspace, 0.0):
            raise BucketUnavailableError(f"{once_bucket(workspace)} could not be opened lately")
        try:
            kv = await self._js.key_value(once_bucket(workspace))
        except _ERRORS:
            self._retry_at[workspace] = time.monotonic() + LOOKUP_RETRY
            raise
        self._buckets[workspace] = kv
        self._retry_at.pop(workspace, None)
        return kv

    async def _claim(self, kv: KeyValue, key: str) -> str | None:
        """Create ``key`` as claimed now; None if created, else the value it holds."""
        try:
            await kv.create(key, f"claimed:{time.time_ns()}".encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # expired meanwhile
                return None
            return (entry.value or b"").decode()

    async def _mark(self, kv: KeyValue, key: str, value: str) -> None:
        """The output is stored; if this fails, the claim stays and a redelivery looks
        for the output in its stream."""
        try:
            await kv.put(key, value.encode())
        except _ERRORS as exc:
            self._log.warning("could not record a published output (%s): %r", key, exc,
                              extra={"stage": self._stage})

    async def _stored_since(self, out: Outbound, since_ns: int) -> str | None:
        """``stored:<stream>:<seq>`` of ``out`` (by its message id) if its stream holds it
        among the messages on its subject stored since ``since_ns``; None if not."""
        try:
            stream = await self._js.find_stream_name_by_subject(out.subject)
            since = datetime.fromtimestamp((since_ns - CLOCK_MARGIN_NS) / 1e9, UTC)
            start = since.isoformat().replace("+00:00", "Z")
            request: dict[str, object] = {"start_time": start, "next_by_subj": out.subject}
            for _ in range(SCAN_LIMIT):
                reply = await self._nc.request(  # nats-py's get_msg takes no start time
                    f"{JS_API}.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=5.0)
                headers = reply.headers or {}
                if headers.get("Status"):  # 404: no more messages
                    return None
                seq = int(headers["Nats-Sequence"])
                if headers.get(h.MSG_ID) == out.msg_id:
                    return f"stored:{stream}:{seq}"
                request = {"seq": seq + 1, "next_by_subj": out.subject}
        except (*_ERRORS, KeyError, ValueError) as exc:
            self._log.warning("could not look for an earlier copy of %s: %r; publishing",
                              out.msg_id, exc, extra={"stage": self._stage})
            return None
        self._log.warning("more than %d messages on %s since the claim of %s; publishing",
                          SCAN_LIMIT, out.subject, out.msg_id, extra={"stage": self._stage})
        return None

    def _already(self, out: Outbound, where: str) -> None:
        self._count["already"].inc()
        self._log.info("not published again: %s is %s (an earlier delivery published it)",
                       out.msg_id, where, extra={"stage": self._stage, "subject": out.subject})

    def _unrecorded(self, out: Outbound, exc: BaseException) -> None:
        self._count["unrecorded"].inc()
        self._log.warning("no once record for %s (%r): publishing with the dedupe window as "
                          "its only guard", out.msg_id, exc,
                          extra={"stage": self._stage, "subject": out.subject})
