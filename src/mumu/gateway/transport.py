"""How clients reach the gateway: HTTPS/WSS from settings, or a TLS-terminating proxy in
front whose ``X-Forwarded-*`` headers are believed only when it is a trusted proxy."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import IPvAnyNetwork

from mumu.broker.tls import TlsConfigError, client_context, server_context
from mumu.gateway.settings import GatewaySettings

Networks = Sequence[IPvAnyNetwork]
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[IPvAnyNetwork, ...])
HSTS = "max-age=31536000"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def ssl_context(gw: GatewaySettings) -> ssl.SSLContext | None:
    """The server context of HTTPS/WSS; ``None`` serves plain HTTP."""
    if gw.tls.cert_file is None and gw.tls.key_file is None:
        return None
    if gw.tls.cert_file is None or gw.tls.key_file is None:
        raise TlsConfigError("the gateway's TLS needs MUMU_GATEWAY__TLS__CERT_FILE and KEY_FILE")
    return server_context(gw.tls.cert_file, gw.tls.key_file)


def client_ssl(gw: GatewaySettings) -> ssl.SSLContext | None:
    """What a local client (``mumu up``'s readiness poll, ``mumu ask``) trusts; ``None``:
    the system CAs."""
    return client_context(gw.tls.ca_file) if gw.tls.ca_file is not None else None


def base_url(gw: GatewaySettings, host: str, port: int) -> str:
    scheme = "https" if gw.tls.cert_file is not None else "http"
    return f"{scheme}://{host}:{port}"


def _trusted(address: str | None, networks: Networks) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _last(value: str | None) -> str | None:
    """The value appended by the nearest proxy (the last of a comma-separated list)."""
    if not value:
        return None
    return value.rsplit(",", 1)[-1].strip() or None


def client_address(forwarded_for: str, networks: Networks) -> str | None:
    """The right-most address of ``X-Forwarded-For`` that is not one of our proxies:
    everything left of it was written by the client and proves nothing."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    untrusted = [hop for hop in hops if not _trusted(hop, networks)]
    # every hop one of our proxies: the first one is as close to the client as we get
    hop = untrusted[-1] if untrusted else (hops[0] if hops else "")
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


def forwarded_view(request: web.Request, networks: Networks) -> web.Request:
    """``request`` as the client saw it, when its peer is a trusted proxy."""
    if not _trusted(request.remote, networks):
        return request
    changes: dict[str, str] = {}
    forwarded_for = request.headers.get("X-Forwarded-For")
    if forwarded_for and (address := client_address(forwarded_for, networks)):
        changes["remote"] = address
    proto = (_last(request.headers.get("X-Forwarded-Proto")) or "").lower()
    if proto in ("http", "https"):
        changes["scheme"] = proto
    host = _last(request.headers.get("X-Forwarded-Host"))
    if host and _HOST.match(host):
        changes["host"] = host
    return request.clone(**changes) if changes else request  # type: ignore[arg-type]


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Handlers see the client's address, scheme and host; HTTPS answers carry HSTS."""
    proxies: tuple[IPvAnyNetwork, ...] = request.app[TRUSTED_PROXIES]
    request = forwarded_view(request, proxies)
    response = await handler(request)
    if request.secure and not response.prepared:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response
