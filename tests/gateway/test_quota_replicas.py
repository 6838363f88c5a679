"""Two gateway replicas share one workspace quota: the usage lives in JetStream KV and
changes by compare-and-set, so together they admit exactly the quota, not twice it."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
from nats.aio.client import Client as NATS

from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from tests.gateway.conftest import serving
from tests.gateway.quota_kit import http_ask, quota_settings
from tests.pg_fixtures import WorkspaceFactory


async def test_two_gateway_replicas_flooded_at_once_admit_exactly_the_quota(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws, _ = await workspace("a")
    await set_limit_overrides(admin_conn, ws, {"asks_per_minute": 10})
    async with serving(cfg) as one, serving(cfg) as two:
        replicas = [one, two]
        asks = [http_ask(http, replicas[i % 2].url, await replicas[i % 2].key_token(ws), f"q{i}")
                for i in range(40)]
        statuses = [status for status, _, _ in await asyncio.gather(*asks)]
    # 40 asks in well under a second: 10 tokens, and at most one more refilled meanwhile
    assert statuses.count(202) in (10, 11), statuses
    assert statuses.count(429) == 40 - statuses.count(202)
