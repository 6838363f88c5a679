"""The ``/health``, ``/ready`` and ``/metrics`` server of a stage process."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mumu import __version__


def health_payload(started: float) -> dict[str, Any]:
    """The seed shape: exactly status, version, uptime, hostname."""
    return {
        "status": "ok",
        "version": __version__,
        "uptime": round(time.monotonic() - started, 3),
        "hostname": socket.gethostname(),
    }


def metrics_response(registry: CollectorRegistry) -> web.Response:
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_probe_app(
    registry: CollectorRegistry, ready: Callable[[], list[str]]
) -> web.Application:
    """``ready`` returns the reasons the stage is not ready (empty: ready)."""
    started = time.monotonic()

    async def health(_: web.Request) -> web.Response:
        return web.json_response(health_payload(started))

    async def readiness(_: web.Request) -> web.Response:
        reasons = ready()
        if reasons:
            return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response(registry)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``app`` (over TLS with ``ssl_context``); returns the runner (to clean up) and
    the bound port.

    The socket is bound here, so the port (``0``: any free one) is known without
    reaching into aiohttp's server object.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return runner, int(sock.getsockname()[1])
