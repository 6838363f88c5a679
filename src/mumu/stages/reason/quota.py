"""The reason stage's part of the workspace quotas (``mumu.quota``): text asks skip ingest,
so a raw NATS producer's text ask is admitted here (asks per minute, requests in flight)
before any work; over quota it is dead-lettered with ``quota_exceeded``, and an ask of
a shredded workspace with ``workspace_shredded`` (without its body). An ask the
gateway admitted already is in flight and passes at no cost."""

from __future__ import annotations

from nats.js import JetStreamContext

from mumu.db.datakeys import WorkspaceShreddedError
from mumu.db.owned_pool import OwnedPool
from mumu.quota.errors import QuotaExceededError
from mumu.quota.gate import QuotaGate
from mumu.quota.usage import QuotaStoreError
from mumu.runtime import PermanentError, RedactedError, TransientError
from mumu.settings import Settings


class TextAskQuota:
    """The gate and the database pool its limits are read with (owned here)."""

    def __init__(self, gate: QuotaGate, pool: OwnedPool | None = None) -> None:
        self.gate = gate
        self._pool = pool

    @classmethod
    def of(cls, settings: Settings) -> TextAskQuota:
        pool = OwnedPool.app(settings.database, min_size=1, max_size=2,
                             owner="the reason stage")
        return cls(QuotaGate(settings.quota, pool.get if pool.configured else None), pool)

    def bind(self, js: JetStreamContext) -> None:
        self.gate.bind(js)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def admit(self, workspace_id: str, request_id: str) -> bool:
        """True when this call took a slot (False: the gateway admitted it already)."""
        try:
            return await self.gate.admit(workspace_id, request_id)
        except WorkspaceShreddedError as exc:  # nothing of its new asks is worked on or kept
            raise RedactedError("workspace_shredded", str(exc)) from exc
        except QuotaExceededError as exc:
            raise PermanentError("quota_exceeded", exc.message) from exc
        except QuotaStoreError as exc:
            raise TransientError("internal", f"quota usage store: {exc}") from exc

    async def take_utterance(self, workspace_id: str, request_id: str) -> None:
        """An utterance of a live stream after its first takes one ask of the workspace's
        asks per minute (the first took it when the stream was admitted; the stream holds
        the slot in flight); past the quota this utterance gets no answer
        (``quota_exceeded``, with when to retry) and the stream goes on."""
        try:
            await self.gate.take_ask(workspace_id, request_id)
        except QuotaExceededError as exc:
            raise PermanentError(
                "quota_exceeded", f"{exc.message} (retry after {exc.retry_after} s)") from exc
        except QuotaStoreError as exc:
            raise TransientError("internal", f"quota usage store: {exc}") from exc

    async def refuse_shredded(self, workspace_id: str) -> None:
        """A transcript (an audio or live ask) of a shredded workspace gets no answer."""
        try:
            await self.gate.shreds.refuse(workspace_id)
        except WorkspaceShreddedError as exc:
            raise RedactedError("workspace_shredded", str(exc)) from exc

    async def release(self, workspace_id: str, request_id: str) -> None:
        try:
            await self.gate.release(workspace_id, request_id)
        except QuotaStoreError as exc:
            raise TransientError("internal", f"quota usage store: {exc}") from exc
