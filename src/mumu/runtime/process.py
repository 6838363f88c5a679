"""Running one stage process: connect, load, serve probes, consume, drain on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from nats.aio.client import Client as NATS

from mumu.broker.connect import NatsUnreachable, connect
from mumu.runtime.consumer import RouteWorker
from mumu.runtime.http import build_probe_app, serve
from mumu.runtime.metrics import StageMetrics
from mumu.runtime.publisher import Publisher
from mumu.runtime.result_budget import ResultBudget
from mumu.runtime.stage import Stage, StageContext
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings

log = logging.getLogger("mumu.stage")
RECONNECT_PAUSE = 2.0
"""Seconds between attempts to reconnect after the server closed the connection."""


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
    tracing: Tracing | None = None,
) -> None:
    """Run ``stage`` until ``stop`` is set. ``started`` is set once it consumes;
    ``metrics``: the registry to fill (a fresh one by default); ``tracing``: where its
    spans go (by default ``MUMU_OTLP_ENDPOINT``; shut down when the stage stops)."""
    name = stage.name
    tracing = tracing or Tracing(name, settings.otlp_endpoint)
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
    violations = metrics.permission_violations
    try:
        first = True
        while not stop.is_set():
            lost = asyncio.Event()
            try:
                nc = conn["nc"] = await connect(
                    settings.nats, name=f"mumu-{name}", role=name,
                    on_violation=lambda subject: violations.labels(name, subject).inc(),
                    on_closed=lost.set,
                )
            except NatsUnreachable:
                if first:
                    raise
                # lost credentials (revoked, rotated) or a server away: try again until
                # they work; unacked messages wait in JetStream meanwhile
                log.warning("cannot reconnect to NATS yet; trying again in %.0f s",
                            RECONNECT_PAUSE, extra={"stage": name})
                await _pause(stop, RECONNECT_PAUSE)
                continue
            first = False
            try:
                ctx = StageContext(
                    name=name, settings=settings, nc=nc, js=nc.jetstream(), metrics=metrics,
                    tracing=tracing, log=log,
                )
                halt = asyncio.Event()
                watch = asyncio.create_task(_set_when_either(stop, lost, halt))
                try:
                    await _consume(stage, ctx, halt, state, started)
                finally:
                    watch.cancel()
            finally:
                with contextlib.suppress(Exception):
                    await nc.drain()
            if lost.is_set() and not stop.is_set():
                state["loaded"] = False
                log.error("NATS closed the connection (credentials refused or revoked?); "
                          "reconnecting", extra={"stage": name})
    finally:
        await runner.cleanup()
        await asyncio.to_thread(tracing.shutdown)  # flushing spans is a blocking export
        log.info("stopped", extra={"stage": name})


async def _set_when_either(a: asyncio.Event, b: asyncio.Event, target: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    target.set()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _consume(
    stage: Stage, ctx: StageContext, stop: asyncio.Event, state: dict[str, bool],
    started: asyncio.Event | None,
) -> None:
    """Start the stage, declare its consumers, consume until ``stop``, stop the stage."""
    await stage.start(ctx)
    try:
        publisher = Publisher(ctx.nc, ctx.metrics, ctx.settings.stage.live_ttl, budget=(
            ResultBudget(ctx.js, ctx.settings.stage.result_bytes_per_day)))
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
