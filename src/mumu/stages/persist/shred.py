"""A shredded workspace in the persist stage: its cached keys dropped, its finals erased.

``mumu keys shred <ws>`` publishes ``mumu.control.shred.<ws>``; every replica holds a
plain (core NATS) subscription on ``mumu.control.shred.*`` and drops the workspace's
unwrapped data keys from its cache at once. (A replica that missed the notice, e.g.
while disconnected, drops them when it next meets the workspace: the database says it
is shredded.)

A final of a shredded workspace that reaches persist (in flight during the shred, or
replayed after it) is dead-lettered without its body (``RedactedError``, code
``shredded``), its copy in the stream is deleted, and its session's context in the KV
``mumu-sessions`` (reason records a turn before it publishes the answer) is purged, so
the plaintext the shred purged does not come back through a late message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import ValidationError

from mumu.broker.jsapi import JetStreamApiError, api
from mumu.contracts import subjects
from mumu.contracts.events import WorkspaceShredded
from mumu.db.datakeys import DataKeys, WorkspaceShreddedError
from mumu.db.pool import workspace_uuid
from mumu.runtime import Inbound, RedactedError
from mumu.runtime.control import ControlListener, why_invalid

log = logging.getLogger(__name__)
STAGE = "persist"
KV_SESSIONS = f"KV_{subjects.BUCKET_SESSIONS}"


def redacted(exc: WorkspaceShreddedError) -> RedactedError:
    """What a message of a shredded workspace becomes: a dead letter without its body."""
    return RedactedError("shredded", str(exc))


class ShredListener(ControlListener):
    """Drops a workspace's cached keys when its shred is announced."""

    def __init__(self, data_keys: DataKeys) -> None:
        super().__init__(subjects.CONTROL_SHRED.wildcard)
        self._data_keys = data_keys
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def subscribe(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        await super().subscribe(nc)

    async def on_notice(self, subject: str, data: bytes) -> None:
        token = subjects.last_token(subject)
        try:
            notice = WorkspaceShredded.model_validate_json(data)
            ws = workspace_uuid(token)
        except (ValidationError, ValueError) as exc:
            why = why_invalid(exc) if isinstance(exc, ValidationError) else str(exc)
            log.warning("ignoring a malformed shred notice on %s: %s", subject, why,
                        extra={"stage": STAGE, "subject": subject})
            return
        if workspace_uuid(notice.workspace_id) != ws:
            log.warning("ignoring a shred notice for workspace %s sent on %s",
                        notice.workspace_id, subject,
                        extra={"stage": STAGE, "subject": subject})
            return
        dropped = self._data_keys.forget(ws)
        log.info("workspace %s was shredded: dropped %d cached data keys", ws, dropped,
                 extra={"stage": STAGE, "workspace_id": ws})

    async def erase(self, late: Iterable[tuple[Inbound[Any], str]]) -> None:
        """Delete these messages (of a shredded workspace; each with its session id) from
        their stream, and their sessions' context from the KV. Best effort: what is gone
        already is fine, a failure is logged."""
        if self._js is None or self._nc is None:
            return
        sessions: set[tuple[str, str]] = set()
        for inbound, session_id in late:
            sessions.add((inbound.workspace_id, session_id))
            if not inbound.stream:
                continue
            try:
                await self._js.delete_msg(inbound.stream, inbound.sequence)
            except nats.js.errors.NotFoundError:
                continue  # the shred's purge (or another replica) was first
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                self._not_erased(f"{inbound.stream} #{inbound.sequence}", exc)
        for ws, session_id in sessions:
            key = f"$KV.{subjects.BUCKET_SESSIONS}.{ws}.{session_id}"
            try:
                await api(self._nc, f"STREAM.PURGE.{KV_SESSIONS}", {"filter": key})
            except (JetStreamApiError, nats.errors.Error, TimeoutError) as exc:
                self._not_erased(key, exc)

    @staticmethod
    def _not_erased(what: str, exc: BaseException) -> None:
        log.warning("could not erase %s of a shredded workspace: %r", what, exc,
                    extra={"stage": STAGE})
