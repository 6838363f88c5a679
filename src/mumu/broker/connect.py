"""Connecting to NATS with the settings."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from mumu.broker.settings import NatsSettings
from mumu.contracts import subjects
from mumu.logs import redacted

log = logging.getLogger(__name__)

# attempts of the FIRST connection; a wrong or down URL fails after about
# FIRST_ATTEMPTS x (connect_timeout + RECONNECT_WAIT) instead of hanging forever
FIRST_ATTEMPTS = 3
RECONNECT_WAIT = 0.5


_VIOLATION = re.compile(r'permissions violation for \w+ to "([^"]*)"', re.IGNORECASE)


def permission_violation(exc: BaseException) -> str | None:
    """The subject of a permission violation the server reported, else None."""
    found = _VIOLATION.search(str(exc))
    return found.group(1) if found else None


class NatsUnreachable(RuntimeError):  # noqa: N818 - reads as the condition it reports
    """The first connection to NATS failed (down, wrong URL or credentials refused)."""

    def __init__(self, url: str, attempts: int, cause: BaseException | None) -> None:
        reason = f": {cause!r}" if cause is not None else ""
        super().__init__(
            f"cannot connect to NATS at {redacted(url)} after {attempts} attempts{reason}"
        )


def seed_file(settings: NatsSettings, role: str) -> Path | None:
    """The nkey seed this process connects with: ``credentials`` itself when it is a
    file, ``<credentials>/<role>.nk`` when it is a directory, None when unset."""
    creds = settings.credentials
    if creds is None:
        return None
    if creds.is_dir():
        path = creds / f"{role}.nk"
        if not path.exists():
            raise RuntimeError(f"no NATS credentials for role {role!r}: {path} is missing")
        return path
    if not creds.exists():
        raise RuntimeError(f"NATS credentials file {creds} does not exist")
    return creds


async def connect(
    settings: NatsSettings,
    name: str,
    url: str | None = None,
    *,
    role: str = "operator",
    on_violation: Callable[[str], None] | None = None,
    on_closed: Callable[[], None] | None = None,
) -> NATS:
    """Connect to ``url`` or the configured server as ``role``.

    ``role`` picks the nkey seed (see ``seed_file``) and the private inbox prefix
    (``_MUMU_INBOX.<role>``, which no producer may subscribe to). ``on_violation`` is
    called with the subject of each permission violation the server reports;
    ``on_closed`` when the connection closes for good (for example its credentials were
    revoked: nats-py does not reconnect after an authorization error).
    The first connection is bounded (``NatsUnreachable`` after a few attempts); once
    connected, reconnects go on forever.
    """
    server = url or settings.url
    if not server:
        raise RuntimeError(
            "no NATS server: set MUMU_NATS__URL (or run `mumu up`, which starts one)"
        )
    options: dict[str, Any] = {
        "servers": [server],
        "name": name,
        "connect_timeout": settings.connect_timeout,
        "max_reconnect_attempts": FIRST_ATTEMPTS - 1,
        "reconnect_time_wait": RECONNECT_WAIT,
        "allow_reconnect": True,
        "inbox_prefix": subjects.service_inbox_prefix(role),
    }
    if settings.user:
        options["user"] = settings.user
    if settings.password:
        options["password"] = settings.password.get_secret_value()
    if settings.creds_file:
        options["user_credentials"] = str(settings.creds_file)
    seed = seed_file(settings, role)
    if seed is not None:
        options["nkeys_seed"] = str(seed)

    nc = NATS()
    last_error: list[BaseException] = []

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected", extra={"stage": name})

    async def closed() -> None:
        if on_closed is not None:
            on_closed()

    async def reconnected() -> None:
        log.info("NATS reconnected", extra={"stage": name})

    async def error(exc: Exception) -> None:
        last_error[:] = [exc]
        violated = permission_violation(exc)
        if violated is not None:
            log.error(
                "NATS refused %s as %s: permission violation on %s", name, role, violated,
                extra={"stage": name},
            )
            if on_violation is not None:
                on_violation(violated)
            return
        # before the first connection the failure is reported once, by NatsUnreachable
        level = logging.WARNING if nc.is_connected or nc.is_reconnecting else logging.DEBUG
        log.log(level, "NATS error on %s: %r", server, exc, extra={"stage": name})

    try:
        await nc.connect(
            **options,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            closed_cb=closed,
            error_cb=error,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        cause = last_error[0] if last_error else exc
        raise NatsUnreachable(server, FIRST_ATTEMPTS, cause) from exc
    # connected once: from now on a lost server is waited for, never given up on
    # (nats-py reads this option on every reconnect attempt)
    nc.options["max_reconnect_attempts"] = -1
    return nc
