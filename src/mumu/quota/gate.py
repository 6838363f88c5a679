"""The quota gate: what the gateway and the stages ask before they take on work.

``admit`` (asks per minute, concurrent requests) before an ask is published or
processed; ``audio`` (longest audio, audio seconds per day) once ingest knows how long
the audio is; ``release`` when a request ends. Limits come from ``LimitsSource``, usage
from ``UsageStore`` (JetStream KV, opened on first use).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from mumu.contracts import subjects
from mumu.quota.errors import QuotaExceededError
from mumu.quota.limits import LIMIT_NAMES, Limits, LimitsSource, Pool
from mumu.quota.settings import QuotaSettings
from mumu.quota.shreds import ShredWatch
from mumu.quota.usage import QuotaStoreError, UsageStore, ask_bucket, seconds_to_midnight

log = logging.getLogger(__name__)
MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a workspace stands against one limit (``mumu workspace usage``)."""

    limit: str
    value: float
    used: float
    overridden: bool

    @property
    def remaining(self) -> float:
        return max(0.0, self.value - self.used)


class QuotaGate:
    """Per-workspace quotas for one process (see the module doc)."""

    def __init__(self, settings: QuotaSettings, pool: Pool | None, *,
                 refusal_memory: float = 0.0) -> None:
        """``refusal_memory``: seconds a refused workspace is refused again without a look
        at the shared usage (a flood's refusals then cost no KV read). Only for a process
        that admits new asks only (the gateway): a stage must look, because the request it
        sees may be in flight already (admitted by the gateway)."""
        self.settings = settings
        self.limits = LimitsSource(settings, pool)
        self.shreds = ShredWatch(pool, settings.limits_cache_seconds)
        """A shredded workspace takes no new asks (checked first, quotas on or off)."""
        self._js: JetStreamContext | None = None
        self._usage: UsageStore | None = None
        self._lock = asyncio.Lock()
        self._memory = refusal_memory
        self._refused: dict[str, tuple[float, QuotaExceededError]] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def bind(self, js: JetStreamContext) -> None:
        """The JetStream context of this process (again after a reconnect)."""
        self._js, self._usage = js, None

    async def usage(self) -> UsageStore:
        if self._usage is not None:
            return self._usage
        if self._js is None:
            raise QuotaStoreError("the quota gate is not bound to NATS")
        async with self._lock:
            if self._usage is None:
                try:
                    kv = await self._js.key_value(subjects.BUCKET_QUOTA)
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                    raise QuotaStoreError(
                        f"bucket {subjects.BUCKET_QUOTA}: {exc!r} (run `mumu streams apply`)"
                    ) from exc
                self._usage = UsageStore(kv, self.settings.inflight_timeout)
            return self._usage

    async def admit(self, workspace_id: str, request_id: str) -> bool:
        """``QuotaExceededError`` when the workspace may not start ``request_id`` now;
        True when this call admitted it (False: in flight already, or quotas are off).
        ``WorkspaceShreddedError`` before anything when the workspace is shredded."""
        await self.shreds.refuse(workspace_id)
        if not self.enabled:
            return False
        remembered = self._refused.get(workspace_id)
        if remembered is not None and remembered[0] > time.monotonic():
            known = remembered[1]  # a new error: re-raising one would grow its traceback
            raise QuotaExceededError(known.limit, known.message, known.retry_after)
        limits = await self.limits.get(workspace_id)
        try:
            return await (await self.usage()).admit(
                workspace_id, request_id, limits, time.time())
        except QuotaExceededError as exc:
            if self._memory > 0:
                if len(self._refused) >= MAX_REMEMBERED:
                    self._refused.clear()
                self._refused[workspace_id] = (time.monotonic() + self._memory, exc)
            raise

    async def take_ask(self, workspace_id: str, request_id: str) -> bool:
        """One ask token for ``request_id``, which holds no slot of its own (an utterance
        of a live stream after its first: the stream was admitted and holds the slot);
        ``QuotaExceededError`` when none is left. True when this call took it."""
        if not self.enabled:
            return False
        limits = await self.limits.get(workspace_id)
        return await (await self.usage()).take_ask(workspace_id, request_id, limits,
                                                   time.time())

    async def hold(self, workspace_id: str, request_id: str) -> bool:
        """``request_id`` (a live stream) still runs: its slot in flight stays taken."""
        if not self.enabled:
            return False
        return await (await self.usage()).hold(workspace_id, request_id, time.time())

    async def check_audio_left(self, workspace_id: str) -> None:
        """Before an audio ask is accepted: is any audio left today?"""
        if not self.enabled:
            return
        limits = await self.limits.get(workspace_id)
        now = time.time()
        used = (await (await self.usage()).audio_day(workspace_id, now)).seconds
        if used >= limits.audio_seconds_per_day:
            raise QuotaExceededError(
                "audio_seconds_per_day",
                f"this workspace's audio quota ({limits.audio_seconds_per_day:g} s per UTC "
                f"day) is spent", retry_after=seconds_to_midnight(now))

    async def audio(self, workspace_id: str, request_id: str, seconds: float) -> None:
        """The decoded audio of ``request_id`` is ``seconds`` long: within the workspace's
        longest audio and today's audio seconds (then charged), else ``QuotaExceededError``."""
        if not self.enabled:
            return
        limits = await self.limits.get(workspace_id)
        if seconds > limits.longest_audio:
            raise QuotaExceededError(
                "longest_audio",
                f"the audio is {seconds:.1f} s long; this workspace's longest audio is "
                f"{limits.longest_audio:g} s", retry_after=60)
        await (await self.usage()).charge_audio(
            workspace_id, request_id, seconds, limits, time.time())

    async def release(self, workspace_id: str, request_id: str) -> bool:
        """``request_id`` ended (answer final, a transcription's final, or an error)."""
        if not self.enabled:
            return False
        return await (await self.usage()).release(workspace_id, request_id, time.time())

    async def standing(self, workspace_id: str) -> list[Standing]:
        """Every limit of the workspace and its usage now."""
        limits = await self.limits.get(workspace_id)
        usage = await self.usage()
        now = time.time()
        flow = await usage.flow(workspace_id)
        day = await usage.audio_day(workspace_id, now)
        used = {
            "asks_per_minute": limits.asks_per_minute
            - flow.tokens_at(ask_bucket(limits), now),
            "audio_seconds_per_day": day.seconds,
            "concurrent_requests": float(len(flow.live(now, usage.inflight_timeout))),
            "longest_audio": day.longest,  # the longest audio today
        }
        values = limits.as_dict()
        return [Standing(name, values[name], round(used[name], 3),
                         name in limits.overridden) for name in LIMIT_NAMES]


__all__ = ["Limits", "QuotaGate", "QuotaStoreError", "Standing"]
