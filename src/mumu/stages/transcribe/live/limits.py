"""The workspace's quotas on live streams at the transcribe stage.

*Longest audio* (``MUMU_QUOTA__LONGEST_AUDIO``, or the workspace's override in
PostgreSQL: the limit an upload gets at ingest). An upload over it is refused whole; a
live stream cannot be, as its audio arrives while it is spoken: it is cut at the limit,
what was said up to there is final, and the stream ends with a ``quota_exceeded`` error
(``route.py``).

*Admission* (asks per minute, requests in flight): a stream is an ask, admitted when its
``LiveStart`` is handled, as ingest admits a raw audio ask. One the gateway admitted is in
flight already and passes free; a raw NATS producer's stream takes its ask and its slot
here, and past a quota ends before any work (``quota_exceeded``, its ``LiveEnded`` and a
dead letter). The slot is freed by ingest at the stream's ``LiveEnded``. A replayed start
(``mumu replay --to-stage``) is not admitted again: its stream is over, and its
``LiveEnded``, published once, would not come again to free a new slot."""

from __future__ import annotations

import math

from nats.js import JetStreamContext

from mumu.db.datakeys import WorkspaceShreddedError
from mumu.db.owned_pool import OwnedPool
from mumu.quota.errors import QuotaExceededError
from mumu.quota.gate import QuotaGate
from mumu.quota.usage import QuotaStoreError
from mumu.runtime import PermanentError, RedactedError, TransientError
from mumu.settings import Settings


class LiveLimits:
    """The quota gate of the live route, with the database pool its limits are read with
    (owned here; ``gate`` ``None``: quotas are off, every stream is admitted and has no
    longest audio)."""

    def __init__(self, gate: QuotaGate | None, pool: OwnedPool | None = None) -> None:
        self._gate = gate
        self._pool = pool

    @classmethod
    def of(cls, settings: Settings) -> LiveLimits:
        if not settings.quota.enabled:
            return cls(None)
        pool = OwnedPool.app(settings.database, min_size=1, max_size=1,
                             owner="the transcribe stage's live limits")
        return cls(QuotaGate(settings.quota, pool.get if pool.configured else None), pool)

    def bind(self, js: JetStreamContext) -> None:
        if self._gate is not None:
            self._gate.bind(js)

    async def longest_audio(self, workspace_id: str) -> float:
        """Seconds one live stream of the workspace may last (inf: no limit)."""
        if self._gate is None:
            return math.inf
        return (await self._gate.limits.get(workspace_id)).longest_audio

    async def admit(self, workspace_id: str, request_id: str) -> None:
        """The stream ``request_id`` may start (free when it is in flight already);
        else ``PermanentError`` ``quota_exceeded`` (``workspace_shredded``, redacted, for
        a shredded workspace), or ``TransientError`` when the usage store cannot answer."""
        if self._gate is None:
            return
        try:
            await self._gate.admit(workspace_id, request_id)
        except WorkspaceShreddedError as exc:
            raise RedactedError("workspace_shredded", str(exc)) from exc
        except QuotaExceededError as exc:
            raise PermanentError(
                "quota_exceeded", f"{exc.message} (retry after {exc.retry_after} s)") from exc
        except QuotaStoreError as exc:
            raise TransientError("internal", f"quota usage store: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
