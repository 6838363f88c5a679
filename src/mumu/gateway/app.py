"""The gateway's aiohttp application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from mumu.broker.connect import connect
from mumu.broker.streams import load_stream_configs, stream_config
from mumu.runtime.http import health_payload, metrics_response
from mumu.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
NC = web.AppKey("nc", NATS)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STARTED = web.AppKey("started", float)


async def _nats_ctx(app: web.Application) -> AsyncIterator[None]:
    nc = await connect(app[SETTINGS].nats, name="mumu-gateway")
    app[NC] = nc
    yield
    await nc.drain()


async def health(request: web.Request) -> web.Response:
    return web.json_response(health_payload(request.app[STARTED]))


async def ready(request: web.Request) -> web.Response:
    reasons: list[str] = []
    nc = request.app[NC]
    if not nc.is_connected:
        reasons.append("nats: not connected")
    else:
        for cfg in load_stream_configs():
            if await stream_config(nc, cfg["name"]) is None:
                reasons.append(f"stream {cfg['name']}: missing (run `mumu streams apply`)")
    if reasons:
        return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[REGISTRY])


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[REGISTRY] = CollectorRegistry()
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(_nats_ctx)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
