"""The gateway's aiohttp application factory."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from mumu.broker.connect import connect
from mumu.broker.direct import DirectClient
from mumu.broker.jsapi import stream_config
from mumu.broker.streams import load_stream_configs
from mumu.gateway import api, openai_compat
from mumu.gateway.asks import Asker
from mumu.gateway.auth import ApiKeys
from mumu.gateway.deps import DEPS, GatewayDeps
from mumu.gateway.errors import json_errors
from mumu.gateway.failed_keys import FailedKeys
from mumu.gateway.feed import LiveFeed
from mumu.gateway.hub import Hub
from mumu.gateway.key_status import KeyStatus
from mumu.gateway.limits import LagMonitor, RateLimiter
from mumu.gateway.metrics import GatewayMetrics
from mumu.gateway.models import Health, Readiness
from mumu.gateway.openapi import openapi_document
from mumu.gateway.quota import build_quota_gate
from mumu.gateway.realtime import realtime
from mumu.gateway.telemetry import Milestones
from mumu.gateway.tokens import TokenSigner
from mumu.gateway.transport import TRUSTED_PROXIES, forwarded
from mumu.gateway.websocket import SOCKETS, close_all, websocket
from mumu.runtime.http import health_payload, metrics_response
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings
from mumu.stages.registry import STAGES

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STARTED = web.AppKey("started", float)
METRICS = web.AppKey("metrics", GatewayMetrics)
SIGNER = web.AppKey("signer", TokenSigner)
API_KEYS = web.AppKey("api_keys", ApiKeys)
KEY_STATUS = web.AppKey("key_status", KeyStatus)
TRACING = web.AppKey("tracing", Tracing)
MILESTONES = web.AppKey("milestones", Milestones)
STATIC = Path(__file__).parent / "static"


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    keys = app[API_KEYS]
    await keys.open()
    yield
    await keys.close()


async def _nats_ctx(app: web.Application) -> AsyncIterator[None]:
    """NATS, the live results feed and the lag monitor: opened before serving, closed after.

    The feed has a connection of its own, read from its read loop (``DirectClient``): if
    the gateway falls behind the results, the server holds them on that connection (and
    past its limit closes it; the feed resumes from its last sequence) while asks are
    still published on the other."""
    settings = app[SETTINGS]
    gw = settings.gateway
    violations = app[METRICS].permission_violations

    def violated(subject: str) -> None:
        violations.labels("gateway", subject).inc()

    nc = await connect(settings.nats, name="mumu-gateway", role="gateway",
                       on_violation=violated)
    try:
        feed_nc = await connect(settings.nats, name="mumu-gateway-feed", role="gateway",
                                on_violation=violated, client=DirectClient)
    except BaseException:
        await nc.close()
        raise
    hub = Hub()
    feed = LiveFeed(feed_nc, app[MILESTONES].wrap(hub.on_message))
    lag = LagMonitor(nc, gw.lag_threshold, gw.lag_check_interval)
    stop = asyncio.Event()
    try:
        await feed.start()
        await lag.check_once()
        app[DEPS] = GatewayDeps(
            settings=settings, signer=app[SIGNER], metrics=app[METRICS],
            limiter=RateLimiter(gw.rate_limit_per_second, gw.rate_limit_burst),
            key_failures=FailedKeys(gw.failed_key_per_second, gw.failed_key_burst),
            key_status=app[KEY_STATUS],
            api_keys=app[API_KEYS], hub=hub, nc=nc, feed=feed,
            asker=Asker(nc, settings.nats, build_quota_gate(settings, nc, app[API_KEYS]),
                        tracing=app[TRACING], milestones=app[MILESTONES]),
            lag=lag,
        )
        tasks = [asyncio.create_task(feed.run(stop)), asyncio.create_task(lag.run(stop)),
                 asyncio.create_task(app[KEY_STATUS].run(stop))]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await feed_nc.drain()
        await nc.drain()


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        m = request.app[METRICS]
        m.requests.labels(name, str(status)).inc()
        m.request_seconds.labels(name).observe(time.perf_counter() - started)


async def health(request: web.Request) -> web.Response:
    return api.respond(Health.model_validate(health_payload(request.app[STARTED])))


async def ready(request: web.Request) -> web.Response:
    reasons: list[str] = []
    deps = request.app[DEPS]
    nc = deps.nc
    if not nc.is_connected:
        reasons.append("nats: not connected")
    else:
        for cfg in load_stream_configs():
            if await stream_config(nc, cfg["name"]) is None:
                reasons.append(f"stream {cfg['name']}: missing (run `mumu streams apply`)")
        await deps.lag.check_once()  # lists every durable consumer of the watched streams
        reasons.extend(
            f"consumer {c.durable} on {c.stream}: missing (start `mumu stage {c.stage}`)"
            for c in STAGES.consumers() if c.durable not in deps.lag.lag
        )
        reasons.extend(deps.lag.reasons)
    database = await deps.api_keys.ping()
    if database is not None:
        reasons.append(database)
    if reasons:
        return api.respond(Readiness(status="unavailable", reasons=reasons), status=503)
    return api.respond(Readiness(status="ready"))


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[REGISTRY])


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def key_status(app: web.Application, settings: Settings) -> KeyStatus:
    """Checks the API keys of session tokens (none without a database); the websockets of
    a key found dead are closed."""
    keys = app[API_KEYS]
    status = KeyStatus(keys.live if keys.configured else None,
                       interval=settings.gateway.key_check_interval,
                       max_age=settings.gateway.key_check_max_age)
    sockets = app[SOCKETS]
    status.in_use = lambda: [c.claims.key_id for c in sockets.values() if c is not None]

    def close_sockets(dead: set[str]) -> None:
        for client in list(sockets.values()):
            if client is not None and client.claims.key_id in dead:
                client.end("token_revoked", "the API key of this session was revoked (or its "
                           "workspace deleted)")

    status.on_dead = close_sockets
    return status


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await asyncio.to_thread(app[TRACING].shutdown)  # flushes the last spans (blocking I/O)


def create_app(settings: Settings, *, tracing: Tracing | None = None) -> web.Application:
    """The gateway; raises ``RuntimeError`` at once when the session secret is missing.
    ``tracing``: where the asks' spans go (default: ``MUMU_OTLP_ENDPOINT``)."""
    gw = settings.gateway
    app = web.Application(
        client_max_size=gw.max_body_bytes, middlewares=[forwarded, _count, json_errors]
    )
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = tuple(gw.trusted_proxies)
    app[SIGNER] = TokenSigner(gw.session_secret, gw.session_ttl, gw.session_secret_previous)
    app[METRICS] = GatewayMetrics()
    app[REGISTRY] = app[METRICS].registry
    app[STARTED] = time.monotonic()
    app[API_KEYS] = ApiKeys(settings)
    app[TRACING] = tracing or Tracing("gateway", settings.otlp_endpoint)
    app[MILESTONES] = Milestones(app[METRICS].registry)
    app[SOCKETS] = weakref.WeakKeyDictionary()
    app[KEY_STATUS] = key_status(app, settings)
    app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_nats_ctx)
    app.on_shutdown.append(close_all)
    r = app.router
    r.add_get("/", index)
    r.add_static("/static", STATIC)
    r.add_get("/api/health", health)
    r.add_get("/api/ready", ready)
    r.add_get("/metrics", metrics)
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/session", api.create_session)
    r.add_post("/api/ask", api.ask)
    r.add_get("/api/ws", websocket)
    r.add_get("/api/sessions/{id}/history", api.history)
    r.add_post("/v1/audio/transcriptions", openai_compat.transcriptions)
    r.add_post("/v1/audio/translations", openai_compat.translations)
    r.add_get("/v1/models", openai_compat.models)
    r.add_get("/v1/realtime", realtime)
    return app
