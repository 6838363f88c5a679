"""Acceptance (issue 14): workspace A floods to its quota through NATS and through the
gateway; workspace B's asks keep working with p99 latency within 2x of B unloaded
(measured in the same test), and A gets 429s and ``quota_exceeded``.

Real nats-server, PostgreSQL, gateway, ingest and reason stages (a fast LLM backend:
this measures the pipeline's isolation, not a model)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter

import aiohttp
import asyncpg
from nats.aio.client import Client as NATS

from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from tests.gateway.conftest import Gateway, serving
from tests.gateway.quota_kit import (
    FastBackend,
    enforcing,
    error_codes,
    http_ask,
    quota_settings,
    raw_text_ask,
)
from tests.harness import Collector
from tests.pg_fixtures import WorkspaceFactory

B_ASKS = 200
FLOOD_RATE = 50.0
"""Asks per second A sends through each path (NATS, gateway): far above its quota."""


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def b_latencies(http: aiohttp.ClientSession, gw: Gateway, ws: str) -> list[float]:
    """B's text asks one after the other, each waited for (``?wait=true``): seconds each."""
    token = gw.token(ws, "b-session")
    took = []
    for i in range(B_ASKS):
        started = time.perf_counter()
        status, body, _ = await http_ask(http, gw.url, token, f"b question {i}", wait=True)
        took.append(time.perf_counter() - started)
        assert status == 200, body
        assert body["answer"] == f"You asked: b question {i}"
    return took


async def flood_nats(nc: NATS, ws: str, stop: asyncio.Event, sent: list[str]) -> None:
    while not stop.is_set():
        sent.append(await raw_text_ask(nc, ws, "flood"))
        await asyncio.sleep(1 / FLOOD_RATE)


async def flood_gateway(http: aiohttp.ClientSession, gw: Gateway, ws: str,
                        stop: asyncio.Event, seen: Counter[str]) -> None:
    token = gw.token(ws, "a-session")
    while not stop.is_set():
        status, body, _ = await http_ask(http, gw.url, token, "flood")
        seen[str(status) if status == 202 else body["error"]["code"]] += 1
        await asyncio.sleep(1 / FLOOD_RATE)


async def test_a_flooding_workspace_gets_429_and_quota_exceeded_and_b_keeps_its_latency(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection, http: aiohttp.ClientSession,
) -> None:
    cfg = quota_settings(settings, pg_settings, limits_cache_seconds=5.0)
    # the per-process request rate limit is not what this test is about: B asks faster
    # than its default 20/s, and A's refusals must come from its quota
    gw_cfg = cfg.gateway.model_copy(update={"rate_limit_per_second": 1000.0,
                                            "rate_limit_burst": 1000})
    cfg = cfg.model_copy(update={"gateway": gw_cfg})
    ws_a, _ = await workspace("a")
    ws_b, _ = await workspace("b")
    await set_limit_overrides(admin_conn, ws_a, {"asks_per_minute": 60,
                                                 "concurrent_requests": 5})
    async with (Collector(nc, "mumu.error.>") as errors, serving(cfg) as gw,
                enforcing(cfg, FastBackend(concurrency=8))):
        await b_latencies(http, gw, ws_b)  # warm-up: connections, caches, consumers
        unloaded = await b_latencies(http, gw, ws_b)
        stop = asyncio.Event()
        sent: list[str] = []
        via_gateway: Counter[str] = Counter()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(flood_nats(nc, ws_a, stop, sent))
            tasks.create_task(flood_gateway(http, gw, ws_a, stop, via_gateway))
            await asyncio.sleep(2.0)  # A is at its quota before B is measured
            try:
                loaded = await b_latencies(http, gw, ws_b)
            finally:
                stop.set()
        with contextlib.suppress(TimeoutError):  # the last refusals of A's raw asks
            await errors.wait_for(lambda _: len(error_codes(errors.messages, ws_a))
                                  >= len(sent) - 60, timeout=10)
    refused_raw = Counter(error_codes(errors.messages, ws_a).values())
    print(f"B p99 unloaded {p99(unloaded) * 1000:.1f} ms, loaded {p99(loaded) * 1000:.1f} ms;"
          f" A via gateway {dict(via_gateway)}, A via NATS sent {len(sent)} "
          f"refused {dict(refused_raw)}")
    assert via_gateway["quota_exceeded"] > 0
    assert refused_raw["quota_exceeded"] > 0
    assert error_codes(errors.messages, ws_b) == {}
    # A started at most its quota: 60 tokens plus what refilled while the test ran
    assert via_gateway["202"] + len(sent) - refused_raw["quota_exceeded"] <= 60 + 60
    assert p99(loaded) <= 2 * p99(unloaded), (p99(unloaded), p99(loaded))
