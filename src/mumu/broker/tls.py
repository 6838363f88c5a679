"""TLS contexts built from certificate files, shared by NATS clients and the gateway.

Everything here is TLS 1.2 or later, with the standard library's defaults for ciphers and
hostname checks: a client verifies the server certificate and its name (or IP SAN)
always; a server verifies client certificates when asked to.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from mumu.broker.settings import NatsTlsSettings


class TlsConfigError(ValueError):
    """A TLS setting names a file that cannot be used (missing, unreadable, not PEM)."""


def _load_chain(ctx: ssl.SSLContext, cert_file: Path | None, key_file: Path | None) -> None:
    if (cert_file is None) != (key_file is None):
        raise TlsConfigError("a TLS certificate needs its key file, and a key its certificate")
    if cert_file is None or key_file is None:
        return
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load certificate {cert_file} / key {key_file}: {exc}"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, ca_file: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load CA file {ca_file}: {exc}") from exc


def client_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context: the server must chain to ``ca_file`` and to nothing else (unset:
    the system CAs); ``cert_file``/``key_file`` is presented to a server that verifies
    clients."""
    if ca_file is not None:
        # not create_default_context(): that also trusts every public CA of the system
        # (and loads them on each connection); hostname checks and CERT_REQUIRED stay on
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_ca(ctx, ca_file)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file)
    return ctx


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path | None = None, *, verify: bool = False
) -> ssl.SSLContext:
    """A server context; ``verify`` requires a client certificate chaining to ``ca_file``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file)
    if ca_file is not None:
        _load_ca(ctx, ca_file)
    if verify:
        if ca_file is None:
            raise TlsConfigError("verifying client certificates needs a CA file")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def wants_tls(settings: NatsTlsSettings, url: str) -> bool:
    """TLS is on for a ``tls://`` URL or as soon as any client TLS file is set."""
    return url.startswith("tls://") or any(
        value is not None
        for value in (settings.ca_file, settings.cert_file, settings.key_file,
                      settings.server_name)
    )


def nats_tls_options(settings: NatsTlsSettings, url: str) -> dict[str, Any]:
    """The nats-py ``connect()`` keyword arguments for TLS (empty when TLS is off)."""
    if not wants_tls(settings, url):
        return {}
    options: dict[str, Any] = {
        "tls": client_context(settings.ca_file, settings.cert_file, settings.key_file)
    }
    if settings.server_name:
        options["tls_hostname"] = settings.server_name
    return options


def is_encrypted(transport: object) -> bool:
    """Whether a nats-py transport runs over TLS (its stream writer carries an SSL object)."""
    writer = getattr(transport, "_io_writer", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    return get_extra_info is not None and get_extra_info("ssl_object") is not None
