"""A stage process's probes, and long work that is never redelivered while running."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS
from mumu.broker.connect import NatsUnreachable
from mumu.contracts import headers as h
from mumu.contracts.events import new_id
from mumu.runtime.http import build_probe_app, serve
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.process import run_stage
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping

WS = "ws-probe"


async def test_health_is_seed_shaped_ready_reports_reasons_and_metrics_are_exposed() -> None:
    metrics = StageMetrics("probe")
    reasons: list[str] = ["nats: not connected"]
    runner, port = await serve(build_probe_app(metrics.registry, lambda: reasons), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                body = await resp.json()
            assert resp.status == 200
            assert set(body) == {"status", "version", "uptime", "hostname"}
            assert body["status"] == "ok" and isinstance(body["uptime"], float)
            async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
                assert resp.status == 503
                assert (await resp.json())["reasons"] == ["nats: not connected"]
            reasons.clear()
            async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
                assert resp.status == 200
            metrics.dead_letters.labels("probe", "too_large").inc()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            assert 'mumu_stage_dead_letters_total{code="too_large",stage="probe"} 1.0' in text
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(text: str, family: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition (None: no such sample)."""
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name == family and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_of_a_running_stage_count_the_messages_it_handled(
    nc: NATS, streams: None, settings: Settings
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"stage": settings.stage.model_copy(update={"http_port": port})}
    )
    route = {"stage": "passthrough", "route": "mumu_bench"}
    url = f"http://127.0.0.1:{port}/metrics"
    async with (running(PassThrough(), settings), Collector(nc) as seen,
                aiohttp.ClientSession() as http):
        async with http.get(url) as resp:
            before = await resp.text()
        for _ in range(5):
            rid = new_id()
            ping = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s")
            await nc.jetstream().publish(BENCH_HOPS[1].for_workspace(WS),
                                         ping.model_dump_json().encode(), headers={h.MSG_ID: rid})
        await seen.wait_count("mumu.bench.hop2.", 5)
        async with asyncio.timeout(5):  # the ack (then the count) follows the output
            while True:
                async with http.get(url) as resp:
                    after = await resp.text()
                if sample(after, "mumu_stage_messages_total", outcome="ack", **route) == 5:
                    break
                await asyncio.sleep(0.05)
    assert sample(before, "mumu_stage_messages_total", outcome="ack", **route) == 0
    assert sample(before, "mumu_stage_latency_seconds_count", **route) == 0
    assert sample(after, "mumu_stage_latency_seconds_count", **route) == 5
    assert sample(after, "mumu_stage_messages_total", outcome="nak", **route) == 0
    assert sample(after, "mumu_stage_inflight", stage="passthrough") == 0


async def test_work_longer_than_ack_wait_is_heartbeaten_not_redelivered(
    nc: NATS, streams: None, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"stage": settings.stage.model_copy(update={"ack_wait": 1.0})}
    )
    stage = PassThrough()
    async with running(stage, settings), Collector(nc) as seen:
        rid = new_id()
        slow = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s",
                    behaviour="slow", seconds=3.5)
        await nc.jetstream().publish(BENCH_HOPS[1].for_workspace(WS),
                                     slow.model_dump_json().encode(), headers={h.MSG_ID: rid})
        await seen.wait_count("mumu.bench.hop2.", 1, timeout=15)
    assert stage.calls == [(rid, 1)], "delivered once although it took 3.5x ack_wait"


async def test_work_still_running_at_sigterm_is_heartbeaten_through_the_drain(
    nc: NATS, streams: None, settings: Settings
) -> None:
    settings = settings.model_copy(update={"stage": settings.stage.model_copy(
        update={"ack_wait": 1.0, "drain_timeout": 10.0})})
    draining, other = PassThrough(), PassThrough()
    rid = new_id()
    slow = Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s",
                behaviour="slow", seconds=3.5)
    async with Collector(nc) as seen, contextlib.AsyncExitStack() as replica:
        async with running(draining, settings):
            await nc.jetstream().publish(BENCH_HOPS[1].for_workspace(WS),
                                         slow.model_dump_json().encode(), headers={h.MSG_ID: rid})
            while not draining.calls:
                await asyncio.sleep(0.05)
            # a replica that would get the message if its ack wait ran out
            await replica.enter_async_context(running(other, settings))
        # stopped (drained) with the work inside: it finished during the drain
        await seen.wait_count("mumu.bench.hop2.", 1, timeout=5)
    assert draining.calls == [(rid, 1)]
    assert other.calls == [], "redelivered to the replica: no heartbeat during the drain"


async def test_probes_answer_while_nats_is_unreachable_then_start_up_fails_naming_it(
    tmp_path: Path,
) -> None:
    with socket.socket() as silent, socket.socket() as probe_port:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts TCP, never says INFO: every attempt times out
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
        probe_port.close()
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        settings = Settings(
            data_dir=tmp_path, nats=NatsSettings(url=url, connect_timeout=1.0),
            stage=StageRuntimeSettings(http_port=port),
        )
        task = asyncio.create_task(run_stage(PassThrough(), settings, asyncio.Event()))
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(5):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                            health = (resp.status, await resp.json())
                            break
                    await asyncio.sleep(0.05)
            async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
                ready = (resp.status, await resp.json())
        assert health[0] == 200 and health[1]["status"] == "ok"
        assert ready[0] == 503 and "nats: not connected" in ready[1]["reasons"]
        with pytest.raises(NatsUnreachable, match=url):
            await asyncio.wait_for(task, 15)


def test_inflight_is_every_route_s_deliveries_at_scrape_time() -> None:
    metrics = StageMetrics("two-routes")
    first: dict[int, str] = {}
    second: dict[int, str] = {}
    metrics.track_inflight(first)
    metrics.track_inflight(second)

    def inflight() -> float | None:
        return metrics.registry.get_sample_value("mumu_stage_inflight", {"stage": "two-routes"})

    assert inflight() == 0
    first[1], second[2], second[3] = "a", "b", "c"
    assert inflight() == 3
    del second[2]
    assert inflight() == 2
