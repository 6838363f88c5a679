"""The bytes one workspace may put in ``MUMU_RESULTS``: a per-workspace budget.

``MUMU_RESULTS`` keeps one sequence for every workspace (the websocket cursor), so it
cannot be a stream per workspace, and JetStream has no per-subject byte limit: its
per-subject message counts bound how many results a workspace holds, not how big they
are (a 32,000-character question is echoed in its ``AnswerFinal``; a long transcript can
pass 256 KiB). So every stage publishes a workspace's transcripts and answers (partials,
deltas and finals; error events are exempt: small, counted by the per-subject limit, and
how a refusal is told) against a token bucket of bytes kept in the ``mumu-quota`` KV under
``<ws>.results``: ``bytes_per_day`` at most, refilled at ``bytes_per_day`` per 24 h. In
any 24 h (the stream's max age) a workspace therefore publishes at most twice that, and
``docs/reliability.md`` sets it so that twice the budget is an eighth of the stream.

A process takes the budget in chunks (``chunk`` bytes, one compare-and-set each) and spends
them locally, so a stream of small deltas costs one KV write per chunk, not per message;
what a process holds unspent is at most one chunk per workspace, and it counts as spent.

A publish past the budget is refused before it reaches JetStream: ``PermanentError``
``result_bytes_exceeded`` (the request is dead-lettered at once and the client told;
running the model again would not make room; not ``quota_exceeded``, whose error events
free no in-flight slot, while this request holds one). A KV that cannot answer lets the
result through (logged, then unchecked for ``UNCHECKED_FOR``): the stream's own
``max_bytes`` with ``discard: new`` still refuses when it is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mumu.contracts import subjects
from mumu.contracts.ids import id_or_none
from mumu.runtime.errors import PermanentError

log = logging.getLogger(__name__)

DAY: Final = 86_400.0
CAS_ATTEMPTS: Final = 20
MAX_WORKSPACES: Final = 10_000
UNCHECKED_FOR: Final = 30.0
"""Seconds results go unbudgeted after the KV could not answer (one warning, not one
failed lookup per publish)."""
BUDGETED: Final = (subjects.TRANSCRIPT_PARTIAL, subjects.TRANSCRIPT_FINAL,
                   subjects.ANSWER_DELTA, subjects.ANSWER_FINAL)
"""The result subjects whose bytes count (``mumu.error.<ws>`` does not)."""


def budgeted_workspace(subject: str) -> str | None:
    """The workspace whose budget a publish on ``subject`` spends, or None."""
    if any(p.matches(subject) for p in BUDGETED):
        return id_or_none(subjects.last_token(subject))
    return None


class ResultBudget:
    """Per-workspace bytes on ``MUMU_RESULTS`` (see the module doc)."""

    def __init__(self, js: JetStreamContext, bytes_per_day: int, chunk: int = 256 * 1024,
                 ) -> None:
        self._js = js
        self.bytes_per_day = bytes_per_day
        self.chunk = max(1, min(chunk, bytes_per_day // 64 or 1))
        self._kv: KeyValue | None = None
        self._left: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._unchecked_until = 0.0

    async def spend(self, subject: str, size: int) -> None:
        """Charge ``size`` bytes published on ``subject`` to its workspace;
        ``PermanentError`` (``result_bytes_exceeded``) when its budget is spent."""
        ws = budgeted_workspace(subject)
        if ws is None or self.bytes_per_day <= 0 or time.monotonic() < self._unchecked_until:
            return
        if self._left.get(ws, 0) >= size:
            self._left[ws] -= size
            return
        async with self._lock:
            left = self._left.get(ws, 0)
            if left < size:
                need = max(self.chunk, size - left)
                if not await self._reserve(ws, need):
                    return  # the KV cannot answer: let it through (logged)
                left += need
            if len(self._left) >= MAX_WORKSPACES and ws not in self._left:
                self._left.clear()  # unspent reservations count as spent: only ever safe
            self._left[ws] = left - size

    async def _reserve(self, ws: str, need: int) -> bool:
        try:
            kv = self._kv or await self._js.key_value(subjects.BUCKET_QUOTA)
            self._kv = kv
            for _ in range(CAS_ATTEMPTS):
                try:
                    entry = await kv.get(f"{ws}.results")
                    raw, revision = entry.value, int(entry.revision or 0)
                except nats.js.errors.KeyNotFoundError:
                    raw, revision = None, 0
                now = time.time()
                tokens = self._tokens(raw, now)
                if tokens < need:
                    rate = self.bytes_per_day / DAY
                    wait = math.ceil((need - tokens) / rate)
                    raise PermanentError(
                        "result_bytes_exceeded",
                        f"this workspace's results are at their limit "
                        f"({self.bytes_per_day} bytes a day, MUMU_STAGE__RESULT_BYTES_PER_DAY);"
                        f" room for this one in about {wait} s")
                doc = json.dumps({"tokens": tokens - need, "at": now}).encode()
                try:
                    await kv.update(f"{ws}.results", doc, last=revision)
                    return True
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("result budgets not checked for %.0f s (%r): publishing",
                        UNCHECKED_FOR, exc)
            self._unchecked_until = time.monotonic() + UNCHECKED_FOR
            return False
        log.warning("result budget of %s still contended after %d attempts: publishing",
                    ws, CAS_ATTEMPTS)
        return False

    def _tokens(self, raw: bytes | None, now: float) -> float:
        full = float(self.bytes_per_day)
        if raw is None:
            return full
        try:
            doc = json.loads(raw)
            tokens, at = float(doc["tokens"]), float(doc["at"])
        except (ValueError, KeyError, TypeError):
            return full
        return min(full, tokens + max(0.0, now - at) * full / DAY)
