"""Cancellation: ``mumu.control.cancel.<ws>`` reaches every replica of the stage.

Each replica holds a plain (core NATS) subscription on ``mumu.control.cancel.*``,
so whichever replica is answering the request sees the cancel at once. A cancel
for a request not being answered yet is remembered for a while: if the request
arrives later (it was queued, or is redelivered), it ends at once as cancelled.
A cancel only applies within the workspace of its subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from mumu.contracts import subjects
from mumu.contracts.events import CancelRequest

log = logging.getLogger(__name__)
STAGE = "reason"


class CancelRegistry:
    def __init__(self, memory: float) -> None:
        self._memory = memory
        self._active: dict[tuple[str, str], asyncio.Event] = {}
        self._recent: dict[tuple[str, str], float] = {}
        self._sub: Subscription | None = None

    async def subscribe(self, nc: Client) -> None:
        self._sub = await nc.subscribe(subjects.CONTROL_CANCEL.wildcard, cb=self._on_msg)
        await nc.flush()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        workspace = subjects.last_token(msg.subject)
        try:
            request = CancelRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning(
                "ignoring a malformed cancel on %s: %s",
                msg.subject,
                exc,
                extra={"stage": STAGE, "subject": msg.subject},
            )
            return
        if request.workspace_id != workspace:
            log.warning(
                "ignoring a cancel for workspace %s sent on %s",
                request.workspace_id,
                msg.subject,
                extra={"stage": STAGE, "request_id": request.request_id, "subject": msg.subject},
            )
            return
        self.cancel(workspace, request.request_id)

    def cancel(self, workspace_id: str, request_id: str) -> None:
        key = (workspace_id, request_id)
        now = time.monotonic()
        self._recent = {k: t for k, t in self._recent.items() if now - t < self._memory}
        self._recent[key] = now
        event = self._active.get(key)
        if event is not None:
            log.info(
                "cancelling request %s",
                request_id,
                extra={"stage": STAGE, "request_id": request_id},
            )
            event.set()

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
