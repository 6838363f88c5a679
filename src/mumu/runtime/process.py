"""Running one stage process: connect, load, serve probes, consume, drain on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

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
) -> None:
    """Run ``stage`` until ``stop`` is set. ``started`` is set once it consumes."""
    name = stage.name
    nc = await connect(settings.nats, name=f"mumu-{name}")
    tracing = Tracing(name, settings.otlp_endpoint)
    metrics = StageMetrics(name)
    ctx = StageContext(
        name=name, settings=settings, nc=nc, js=nc.jetstream(), metrics=metrics, tracing=tracing,
        log=log,
    )
    state = {"loaded": False}

    def not_ready() -> list[str]:
        reasons = []
        if not nc.is_connected:
            reasons.append("nats: not connected")
        if not state["loaded"]:
            reasons.append(f"{name}: still starting (loading models, opening resources)")
        return reasons

    runner, port = await serve(
        build_probe_app(metrics.registry, not_ready),
        settings.stage.http_host,
        settings.stage.http_port,
    )
    log.info("probes on http://%s:%d", settings.stage.http_host, port, extra={"stage": name})
    try:
        await stage.start(ctx)
        try:
            publisher = Publisher(nc, metrics)
            workers = [RouteWorker(ctx, route, publisher) for route in stage.routes()]
            for worker in workers:
                await worker.ensure_consumer()
            state["loaded"] = True
            log.info("consuming", extra={"stage": name})
            if started is not None:
                started.set()
            async with asyncio.TaskGroup() as tg:
                for worker in workers:
                    tg.create_task(worker.run(stop))
        finally:
            await stage.stop()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        await runner.cleanup()
        tracing.shutdown()
        log.info("stopped", extra={"stage": name})
