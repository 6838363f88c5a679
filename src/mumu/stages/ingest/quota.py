"""Ingest's part of the workspace quotas (``mumu.quota``).

Raw NATS producers reach ingest without the gateway, so ingest enforces what the gateway
does (asks per minute, requests in flight) before decoding, and what only a decode can
tell (longest audio, audio seconds per day) after it: an ask over quota is dead-lettered
with ``quota_exceeded`` (and the client sees it on ``mumu.error.<ws>``), with no further
processing. Ingest also watches the ends of requests (finals, errors) on ``MUMU_RESULTS``
and frees their in-flight slots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from mumu.contracts import subjects
from mumu.contracts.consumers import INGEST_QUOTA_ENDS
from mumu.db.datakeys import WorkspaceShreddedError
from mumu.quota.errors import QuotaExceededError
from mumu.quota.gate import QuotaGate
from mumu.quota.usage import QuotaStoreError
from mumu.runtime import (
    Inbound,
    Outbound,
    PermanentError,
    RedactedError,
    Route,
    TransientError,
)

log = logging.getLogger(__name__)

END_SUBJECTS = (
    subjects.TRANSCRIPT_FINAL.wildcard, subjects.ANSWER_FINAL.wildcard, subjects.ERROR.wildcard,
    subjects.STREAM_ENDED.wildcard,  # a live stream's slot, held until it is over
)


def stage_error(exc: QuotaExceededError | QuotaStoreError) -> PermanentError | TransientError:
    """A quota refusal is permanent (dead letter + ``quota_exceeded``); a usage store that
    cannot answer is transient (redelivered)."""
    if isinstance(exc, QuotaExceededError):
        return PermanentError("quota_exceeded", exc.message)
    return TransientError("internal", f"quota usage store: {exc}")


def shredded(exc: WorkspaceShreddedError) -> RedactedError:
    """A new ask of a shredded workspace: refused before any work, and nothing of it kept
    (the dead letter has neither its body nor its headers)."""
    return RedactedError("workspace_shredded", str(exc))


def ends_request(subject: str, body: dict[str, Any]) -> bool:
    """Whether this result ends a request that holds an in-flight slot: an answer final,
    an error, or the transcript final of a request that wants no answer (a transcription).
    A ``quota_exceeded`` error holds none (a refused request never gets a slot, or gives
    it back before it is refused: ``IngestQuota.audio``), so a flood's refusals cost
    no lookup here. A live stream's ``LiveEnded`` ends the stream's request (its slot)."""
    if subjects.TRANSCRIPT_FINAL.matches(subject):
        return body.get("answer") is False
    if subjects.ERROR.matches(subject):
        return body.get("code") != "quota_exceeded"
    return True


class IngestQuota:
    """Admission before the work, the audio quotas after the decode, and the route that
    frees in-flight slots when requests end."""

    def __init__(self, gate: QuotaGate) -> None:
        self.gate = gate

    def route(self) -> Route:
        return Route(subjects.STREAM_RESULTS, END_SUBJECTS, self.handle, model=None,
                     durable=INGEST_QUOTA_ENDS.durable)

    async def admit(self, workspace_id: str, request_id: str) -> None:
        """Asks per minute and requests in flight, before any work; a shredded workspace
        is refused first (``workspace_shredded``, a dead letter without the body)."""
        try:
            await self.gate.admit(workspace_id, request_id)
        except WorkspaceShreddedError as exc:
            raise shredded(exc) from exc
        except (QuotaExceededError, QuotaStoreError) as exc:
            raise stage_error(exc) from exc

    async def audio(self, workspace_id: str, request_id: str, seconds: float) -> None:
        """The audio quotas of an admitted request; refused, it gives its slot back."""
        try:
            await self.gate.audio(workspace_id, request_id, seconds)
        except QuotaExceededError as exc:
            try:
                await self.gate.release(workspace_id, request_id)
            except QuotaStoreError as store:
                raise stage_error(store) from store
            raise stage_error(exc) from exc
        except QuotaStoreError as exc:
            raise stage_error(exc) from exc

    async def handle(self, inbound: Inbound[Any]) -> Sequence[Outbound]:
        try:
            body = json.loads(inbound.data)
        except ValueError:
            return []  # not an event: nothing to free
        rid = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(rid, str) or not ends_request(inbound.subject, body):
            return []
        try:
            if await self.gate.release(inbound.workspace_id, rid):
                log.debug("request %s ended: in-flight slot freed", rid,
                          extra={"stage": "ingest", "request_id": rid})
        except QuotaStoreError as exc:
            raise stage_error(exc) from exc
        return []
