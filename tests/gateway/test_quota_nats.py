"""Workspace quotas for raw NATS producers (no gateway): text asks over quota end as
``quota_exceeded`` errors and dead letters, with no answer (real nats-server,
PostgreSQL, ingest and reason stages)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import asyncpg
from nats.aio.client import Client as NATS

from mumu.contracts import subjects
from mumu.db.quotas import set_limit_overrides
from mumu.settings import Settings
from tests.gateway.quota_kit import (
    FastBackend,
    answered,
    enforcing,
    error_codes,
    quota_settings,
    raw_text_ask,
)
from tests.harness import Collector, Seen
from tests.pg_fixtures import WorkspaceFactory


async def test_raw_text_asks_past_the_per_minute_quota_are_dead_lettered_unanswered(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws_a, _ = await workspace("a")
    ws_b, _ = await workspace("b")
    await set_limit_overrides(admin_conn, ws_a, {"asks_per_minute": 3})
    backend = FastBackend()
    async with Collector(nc) as seen, enforcing(cfg, backend):
        a = [await raw_text_ask(nc, ws_a, f"a{i}") for i in range(6)]
        b = [await raw_text_ask(nc, ws_b, f"b{i}") for i in range(3)]
        await seen.wait_for(lambda _: len(answered(seen.messages, ws_a))
                            + len(error_codes(seen.messages, ws_a)) >= 6
                            and len(answered(seen.messages, ws_b)) >= 3, timeout=20)
        await asyncio.sleep(0.3)  # nothing more may come: one outcome per ask
    done, refused = answered(seen.messages, ws_a), error_codes(seen.messages, ws_a)
    # handled concurrently: any three get the tokens, the others are refused
    assert len(done) == 3 and done <= set(a)
    assert refused == dict.fromkeys(set(a) - done, "quota_exceeded")
    assert answered(seen.messages, ws_b) == set(b)
    assert error_codes(seen.messages, ws_b) == {}
    assert backend.started == 3 + 3  # the refused asks never reached the model
    letters = seen.on(subjects.DLQ.stage("reason").prefix)
    assert sorted(m.headers["Mumu-Dlq-Code"] for m in letters) == ["quota_exceeded"] * 3
    assert {json.loads(m.data)["request_id"] for m in letters} == set(a) - done


async def test_raw_text_asks_past_the_in_flight_cap_are_refused_until_answers_free_it(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory, admin_conn: asyncpg.Connection,
) -> None:
    cfg = quota_settings(settings, pg_settings)
    ws, _ = await workspace("a")
    await set_limit_overrides(admin_conn, ws, {"concurrent_requests": 2})
    hold = asyncio.Event()
    backend = FastBackend(concurrency=4, hold=hold)
    async with Collector(nc) as seen, enforcing(cfg, backend):
        asks = [await raw_text_ask(nc, ws, f"q{i}") for i in range(4)]
        await seen.wait_for(lambda _: len(error_codes(seen.messages, ws)) >= 2, timeout=20)
        assert backend.started == 2
        hold.set()
        await seen.wait_for(lambda _: len(answered(seen.messages, ws)) >= 2, timeout=20)
        # the answers ended two requests: ingest freed their slots
        def settled(rid: str) -> Callable[[list[Seen]], bool]:
            return lambda messages: rid in answered(messages, ws) or rid in error_codes(
                messages, ws)

        later = ""
        async with asyncio.timeout(15):
            while not later or later in error_codes(seen.messages, ws):
                later = await raw_text_ask(nc, ws, "after the answers")
                await seen.wait_for(settled(later), timeout=10)
    done, codes = answered(seen.messages, ws), error_codes(seen.messages, ws)
    first = done & set(asks)
    assert len(first) == 2 and later in done
    assert {rid: codes[rid] for rid in set(asks) - first} == dict.fromkeys(
        set(asks) - first, "quota_exceeded")
