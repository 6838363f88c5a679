"""Connecting to NATS with the settings."""

from __future__ import annotations

import logging
from typing import Any

from nats.aio.client import Client as NATS

from mumu.settings import NatsSettings

log = logging.getLogger(__name__)


async def connect(settings: NatsSettings, name: str, url: str | None = None) -> NATS:
    """Connect (retrying reconnects forever) to ``url`` or the configured server."""
    server = url or settings.url
    if not server:
        raise RuntimeError(
            "no NATS server: set MUMU_NATS__URL (or run `mumu up`, which starts one)"
        )
    options: dict[str, Any] = {
        "servers": [server],
        "name": name,
        "connect_timeout": settings.connect_timeout,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    if settings.user:
        options["user"] = settings.user
    if settings.password:
        options["password"] = settings.password.get_secret_value()
    if settings.creds_file:
        options["user_credentials"] = str(settings.creds_file)

    nc = NATS()

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected", extra={"stage": name})

    async def reconnected() -> None:
        log.info("NATS reconnected", extra={"stage": name})

    async def error(exc: Exception) -> None:
        log.warning("NATS error: %r", exc, extra={"stage": name})

    await nc.connect(
        **options,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    return nc
