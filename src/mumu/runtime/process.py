"""Running one stage process: connect, load, serve probes, consume, drain on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from nats.aio.client import Client as NATS

from mumu.broker.connect import connect
from mumu.runtime.consumer import RouteWorker
from mumu.runtime.http import build_probe_app, serve
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.stage import Stage, StageContext
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings

log = logging.getLogger("mumu.stage")


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: stop fetching, finish or nak in-flight work."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_stage(
    stage: Stage,
    settings: Settings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    metrics: StageMetrics | None = None,
) -> None:
    """Run ``stage`` until ``stop`` is set. ``started`` is set once it consumes;
    ``metrics``: the registry to fill (a fresh one by default)."""
    name = stage.name
    tracing = Tracing(name, settings.otlp_endpoint)
    metrics = metrics or StageMetrics(name)
    conn: dict[str, NATS] = {}
    state = {"loaded": False}

    def not_ready() -> list[str]:
        reasons = []
        nc = conn.get("nc")
        if nc is None or not nc.is_connected:
            reasons.append("nats: not connected")
        if not state["loaded"]:
            reasons.append(f"{name}: still starting (loading models, opening resources)")
        return reasons

    # probes first: /health answers (and /ready says why not) while NATS is still dialled
    runner, port = await serve(
        build_probe_app(metrics.registry, not_ready),
        settings.stage.http_host,
        settings.stage.http_port,
    )
    log.info("probes on http://%s:%d", settings.stage.http_host, port, extra={"stage": name})
    try:
        nc = conn["nc"] = await connect(settings.nats, name=f"mumu-{name}")
        try:
            ctx = StageContext(
                name=name, settings=settings, nc=nc, js=nc.jetstream(), metrics=metrics,
                tracing=tracing, log=log,
            )
            await _consume(stage, ctx, stop, state, started)
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        await runner.cleanup()
        tracing.shutdown()
        log.info("stopped", extra={"stage": name})


async def _consume(
    stage: Stage, ctx: StageContext, stop: asyncio.Event, state: dict[str, bool],
    started: asyncio.Event | None,
) -> None:
    """Start the stage, declare its consumers, consume until ``stop``, stop the stage."""
    await stage.start(ctx)
    try:
        publisher = Publisher(ctx.nc, ctx.metrics, ctx.settings.stage.live_ttl)
        workers = [RouteWorker(ctx, route, publisher) for route in stage.routes()]
        for worker in workers:
            await worker.ensure_consumer()
        state["loaded"] = True
        log.info("consuming", extra={"stage": ctx.name})
        if started is not None:
            started.set()
        async with asyncio.TaskGroup() as tg:
            for worker in workers:
                tg.create_task(worker.run(stop))
    finally:
        await stage.stop()
