"""Cancellation: ``mumu.control.cancel.<ws>`` reaches every replica of the stage.

Each replica holds a plain (core NATS) subscription on ``mumu.control.cancel.*``,
so whichever replica is answering the request sees the cancel at once. A cancel
for a request not being answered yet is remembered for a while: if the request
arrives later (it was queued, or is redelivered), it ends at once as cancelled.
A cancel only applies within the workspace of its subject.

Each cancel costs O(1) however many are remembered: they are kept in the order they
came (a re-sent cancel moves to the end), so the ones past ``memory`` seconds are
always at the front and are dropped from there; at most ``MAX_REMEMBERED`` are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator

from pydantic import ValidationError

from mumu.contracts import subjects
from mumu.contracts.events import CancelRequest
from mumu.runtime.control import ControlListener, why_invalid

log = logging.getLogger(__name__)
STAGE = "reason"
MAX_REMEMBERED = 100_000
"""Most cancels remembered for requests not being answered (the oldest go first)."""


class CancelRegistry(ControlListener):
    def __init__(self, memory: float, max_remembered: int = MAX_REMEMBERED) -> None:
        super().__init__(subjects.CONTROL_CANCEL.wildcard)
        self._memory = memory
        self._max = max_remembered
        self._active: dict[tuple[str, str], asyncio.Event] = {}
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        """Remembered cancels, oldest first."""

    async def on_notice(self, subject: str, data: bytes) -> None:
        workspace = subjects.last_token(subject)
        try:
            request = CancelRequest.model_validate_json(data)
        except ValidationError as exc:
            log.warning(
                "ignoring a malformed cancel on %s: %s",
                subject,
                why_invalid(exc),
                extra={"stage": STAGE, "subject": subject},
            )
            return
        if request.workspace_id != workspace:
            log.warning(
                "ignoring a cancel for workspace %s sent on %s",
                request.workspace_id,
                subject,
                extra={"stage": STAGE, "request_id": request.request_id, "subject": subject},
            )
            return
        self.cancel(workspace, request.request_id)

    def cancel(self, workspace_id: str, request_id: str) -> None:
        key = (workspace_id, request_id)
        now = time.monotonic()
        self._forget(now)
        self._recent[key] = now
        self._recent.move_to_end(key)
        if len(self._recent) > self._max:
            self._recent.popitem(last=False)
        event = self._active.get(key)
        if event is not None:
            log.info(
                "cancelling request %s",
                request_id,
                extra={"stage": STAGE, "request_id": request_id},
            )
            event.set()

    def _forget(self, now: float) -> None:
        """Drop the cancels older than ``memory`` (all at the front): O(1) per cancel,
        amortised, as each is dropped once."""
        recent = self._recent
        while recent:
            key = next(iter(recent))
            if now - recent[key] < self._memory:
                return
            del recent[key]

    @property
    def remembered(self) -> int:
        return len(self._recent)

    @contextlib.contextmanager
    def watch(self, workspace_id: str, request_id: str) -> Iterator[asyncio.Event]:
        """An event set when the request is (or already was) cancelled."""
        key = (workspace_id, request_id)
        event = asyncio.Event()
        cancelled_at = self._recent.get(key)
        if cancelled_at is not None and time.monotonic() - cancelled_at < self._memory:
            event.set()
        self._active[key] = event
        try:
            yield event
        finally:
            if self._active.get(key) is event:
                del self._active[key]
