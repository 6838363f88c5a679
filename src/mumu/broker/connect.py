"""Connecting to NATS with the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from mumu.broker.settings import NatsSettings
from mumu.broker.tls import is_encrypted, nats_tls_options, wants_tls
from mumu.contracts import subjects
from mumu.logs import redacted

log = logging.getLogger(__name__)

# attempts of the FIRST connection; a wrong or down URL fails after about
# FIRST_ATTEMPTS x (connect_timeout + RECONNECT_WAIT) instead of hanging forever
FIRST_ATTEMPTS = 3
RECONNECT_WAIT = 0.5


_VIOLATION = re.compile(r'permissions violation for \w+ to "([^"]*)"', re.IGNORECASE)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


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


def server_list(url: str) -> list[str]:
    """``url`` as nats-py's servers: a comma-separated list names the seed servers of a
    cluster (nats-py learns the rest from the servers themselves)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(
    settings: NatsSettings,
    name: str,
    url: str | None = None,
    *,
    role: str = "operator",
    on_violation: Callable[[str], None] | None = None,
    on_closed: Callable[[], None] | None = None,
    client: Callable[[], NATS] = NATS,
) -> NATS:
    """Connect to ``url`` or the configured server as ``role`` (``client`` makes the
    nats-py client: ``broker.direct.DirectClient`` for the gateway's results feed).

    ``role`` picks the nkey seed (see ``seed_file``) and the private inbox prefix
    (``_MUMU_INBOX.<role>``, which no producer may subscribe to). ``on_violation`` is
    called with the subject of each permission violation the server reports;
    ``on_closed`` once, when the connection closes for good (for example its credentials
    were revoked: nats-py does not reconnect after an authorization error).
    The first connection is bounded (``NatsUnreachable`` after a few attempts); once
    connected, reconnects go on forever.
    """
    server = url or settings.url
    if not server:
        raise RuntimeError(
            "no NATS server: set MUMU_NATS__URL (or run `mumu up`, which starts one)"
        )
    options = _options(settings, server, name, role)

    nc = client()
    last_error: list[BaseException] = []
    closing = _Closing(nc, on_closed)
    connected_once = False

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected", extra={"stage": name})

    tls_wanted = wants_tls(settings.tls, server)

    async def reconnected() -> None:
        if tls_wanted and not is_encrypted(nc._transport):
            # a server that does not ask for TLS got the reconnect (see the check of the
            # first connection below): drop it, so nats-py goes on looking for a TLS server
            log.error("NATS reconnected without TLS; dropping the connection",
                      extra={"stage": name})
            if nc._transport is not None:
                nc._transport.close()  # type: ignore[no-untyped-call]
            return
        log.info("NATS reconnected", extra={"stage": name})

    tls_refused = asyncio.Event()

    async def error(exc: Exception) -> None:
        # a refusal of the credentials is the cause to report, whatever broke after it
        if not (last_error and _refused(last_error[0])):
            last_error[:] = [exc]
        if isinstance(exc, ssl.SSLError) and not nc.is_connected:
            tls_refused.set()
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
        level = logging.WARNING if connected_once else logging.DEBUG
        log.log(level, "NATS error on %s: %r", redacted(server), exc, extra={"stage": name})
        if on_closed is not None and connected_once and _refused(exc) and not closing.started:
            # nats-py keeps the public key of the seed it first read, so it cannot come
            # back with a rotated seed: close, and let the owner connect afresh
            log.error("NATS refused the credentials of %s as %s; closing to reconnect "
                      "with whatever the credentials file holds now", name, role,
                      extra={"stage": name})
            closing.start()

    try:
        await _unless_tls_refused(nc.connect(
            **options,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            closed_cb=closing.closed,
            error_cb=error,
        ), tls_refused)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        cause = last_error[0] if last_error else exc
        raise NatsUnreachable(server, FIRST_ATTEMPTS, cause) from exc
    if tls_wanted and not is_encrypted(nc._transport):
        # nats-py upgrades only when the server asks for TLS; one that does not (or a
        # man in the middle) would otherwise get this connection in plaintext
        await nc.close()
        raise NatsUnreachable(server, 1, RuntimeError("the server does not offer TLS"))
    # connected once: from now on a lost server is waited for, never given up on
    # (nats-py reads this option on every reconnect attempt)
    nc.options["max_reconnect_attempts"] = -1
    connected_once = True
    return nc


class _Closing:
    """Tells the owner once that the connection closed for good, whoever closed it."""

    def __init__(self, nc: NATS, on_closed: Callable[[], None] | None) -> None:
        self._nc = nc
        self._on_closed = on_closed
        self._reported = False
        self._task: asyncio.Future[None] | None = None  # owned here: the close we started

    @property
    def started(self) -> bool:
        return self._task is not None

    async def closed(self) -> None:
        """nats-py's ``closed_cb``."""
        if self._on_closed is not None and not self._reported:
            self._reported = True
            self._on_closed()

    def start(self) -> None:
        """Close the connection (its credentials were refused)."""
        self._task = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.close()
        # nats-py calls ``closed_cb`` only from the close that did the closing: when the
        # server's -ERR arrives during a reconnect handshake, nats-py closes on its own
        # without callbacks, and this close returns at once, so report it here
        await self.closed()


def _options(settings: NatsSettings, server: str, name: str, role: str) -> dict[str, Any]:
    """nats-py's ``connect()`` options: bounded first attempts, credentials, TLS."""
    options: dict[str, Any] = {
        "servers": server_list(server),
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
    options.update(nats_tls_options(settings.tls, server))
    seed = seed_file(settings, role)
    if seed is not None:
        options["nkeys_seed"] = str(seed)
    return options


async def _unless_tls_refused(connecting: Awaitable[None], refused: asyncio.Event) -> None:
    """``connecting``, given up on as soon as a TLS handshake fails.

    After a failed handshake nats-py's ``connect()`` waits forever for the socket to close
    (nats-io/nats.py#718); a certificate that does not verify does not verify on the next
    attempt either, so the first such failure ends the first connection.
    """
    task = asyncio.ensure_future(connecting)
    watch = asyncio.create_task(refused.wait())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        watch.cancel()
        await asyncio.wait({task, watch})
    if task.cancelled():
        raise ssl.SSLError("TLS handshake refused")
    task.result()
