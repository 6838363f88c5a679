"""The workspace quotas as gateway clients meet them: 429 ``quota_exceeded`` with
``Retry-After`` before an ask is published (``mumu.quota`` keeps the usage every replica
and stage shares); before that, 410 ``workspace_shredded`` for a shredded workspace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from nats.aio.client import Client as NatsClient

from mumu.db.datakeys import WorkspaceShreddedError
from mumu.gateway.auth import ApiKeys
from mumu.gateway.errors import ApiError
from mumu.quota.errors import QuotaExceededError
from mumu.quota.gate import QuotaGate
from mumu.quota.usage import QuotaStoreError
from mumu.runtime.client_errors import FIXED as CLIENT_MESSAGES
from mumu.settings import Settings

log = logging.getLogger("mumu.gateway.quota")
T = TypeVar("T")
REFUSAL_MEMORY = 0.25
"""Seconds a workspace refused by its quota is refused again by this replica without a
KV read: a flooding tenant costs the shared store at most four reads a second per
replica, and an ask is refused at most this long after it could have been admitted."""


def build_quota_gate(settings: Settings, nc: NatsClient, api_keys: ApiKeys) -> QuotaGate:
    """The gateway's gate: limits read with the API keys' pool, usage in ``mumu-quota``."""
    gate = QuotaGate(settings.quota, api_keys.resolve_pool if api_keys.configured else None,
                     refusal_memory=REFUSAL_MEMORY)
    gate.bind(nc.jetstream())
    return gate


async def enforced(check: Awaitable[T]) -> T:
    """Run a quota check; its refusal is the client's 429, a usage store that cannot
    answer a 503."""
    try:
        return await check
    except QuotaExceededError as exc:
        raise ApiError(429, "quota_exceeded", exc.message,
                       headers={"Retry-After": str(exc.retry_after)}) from exc
    except WorkspaceShreddedError as exc:
        raise ApiError(410, "workspace_shredded", CLIENT_MESSAGES["workspace_shredded"]) from exc
    except QuotaStoreError as exc:
        log.warning("quota check failed: %s", exc)
        raise ApiError(503, "unavailable", "the quota store is not reachable; retry",
                       headers={"Retry-After": "2"}) from exc


async def admit_ask(gate: QuotaGate | None, workspace_id: str, request_id: str, *,
                    audio: bool) -> bool:
    """Before publishing: the ask fits the workspace's asks per minute and requests in
    flight (and, for audio, some of today's audio seconds are left). True when this ask
    took a slot (False: its request id is in flight already)."""
    if gate is None:
        return False
    await enforced(gate.shreds.refuse(workspace_id))  # 410 workspace_shredded, before all
    if audio:
        await enforced(gate.check_audio_left(workspace_id))
    return await enforced(gate.admit(workspace_id, request_id))


async def give_back(gate: QuotaGate | None, workspace_id: str, request_id: str) -> None:
    """The ask was not published after all: free its in-flight slot."""
    if gate is None:
        return
    try:
        await gate.release(workspace_id, request_id)
    except QuotaStoreError as exc:  # the slot ages out after quota.inflight_timeout
        log.warning("could not free the quota slot of %s: %s", request_id, exc)
