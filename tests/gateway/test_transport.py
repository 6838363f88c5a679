"""The gateway over HTTPS and WSS, and behind a TLS-terminating proxy (X-Forwarded-*)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from mumu.broker.tls import client_context
from mumu.gateway.settings import GatewayTlsSettings
from mumu.gateway.transport import HSTS
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, gateway_settings, receive_until, serving
from tests.pg_fixtures import WorkspaceFactory
from tests.tls_certs import Pki


def tls_settings(settings: Settings, pki: Pki, **overrides: Any) -> Settings:
    tls = GatewayTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca)
    return gateway_settings(settings, tls=tls, **overrides)


def trusting(pki: Pki) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(pki.ca)))


async def test_the_gateway_serves_https_and_wss(
    nc: NATS, streams: None, settings: Settings, pki: Pki, other_pki: Pki
) -> None:
    async with serving(tls_settings(settings, pki)) as gw, trusting(pki) as http:
        assert gw.url.startswith("https://127.0.0.1:")
        async with http.get(f"{gw.url}/api/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
            assert resp.headers["Strict-Transport-Security"] == HSTS
        token = gw.token(WS_A, "tls")
        assert gw.ws_url(token).startswith("wss://")
        async with http.ws_connect(gw.ws_url(token)) as ws:
            ready = await receive_until(ws, lambda m: m["type"] == "ready")
            assert ready[-1]["session_id"] == "tls"
        # plaintext on the TLS port is not served
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(gw.url.replace("https://", "http://") + "/api/health"):
                    pass
        # a client that trusts another CA refuses the gateway's certificate
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with trusting(other_pki) as stranger, stranger.get(f"{gw.url}/api/health"):
                pass


async def test_hsts_follows_x_forwarded_proto_only_from_a_trusted_proxy(
    nc: NATS, streams: None, settings: Settings
) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    cfg = gateway_settings(settings, trusted_proxies=["127.0.0.1"])
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/api/health", headers=proxied) as resp:
            assert resp.headers.get("Strict-Transport-Security") == HSTS
        async with http.get(f"{gw.url}/api/health") as resp:  # the proxy's own plain request
            assert "Strict-Transport-Security" not in resp.headers
        # a websocket the proxy passes on works on the forwarded view of its request
        async with http.ws_connect(gw.ws_url(gw.token(WS_A, "proxied")), headers=proxied) as ws:
            ready = await receive_until(ws, lambda m: m["type"] == "ready")
            assert ready[-1]["session_id"] == "proxied"
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))  # not a trusted proxy
        async with aiohttp.ClientSession(connector=other) as direct, direct.get(
            f"{gw.url}/api/health", headers=proxied
        ) as resp:
            assert "Strict-Transport-Security" not in resp.headers


async def guesses(http: aiohttp.ClientSession, url: str, forwarded_for: str | None,
                  keys: list[str]) -> list[int]:
    statuses = []
    for key in keys:
        headers = {"Authorization": f"Bearer {key}"}
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        async with http.post(f"{url}/api/session", headers=headers) as resp:
            statuses.append(resp.status)
    return statuses


async def test_failed_key_limits_key_on_the_forwarded_client_and_key_prefix_behind_a_proxy(
    nc: NATS, streams: None, settings: Settings, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    """Behind a proxy every request comes from the proxy's address: keyed on that, one
    client with a stale key would lock every other client out. The bucket is the
    forwarded client *and* the key's prefix."""
    cfg = gateway_settings(settings, failed_key_burst=3, failed_key_per_second=0.01,
                           trusted_proxies=["127.0.0.1/32"])
    cfg = cfg.model_copy(update={"database_url": pg_settings.database_url})
    _, key = await workspace("proxied")
    stale = "mumu_stale0" + "x" * 38
    async with serving(cfg) as gw, aiohttp.ClientSession() as http:
        assert await guesses(http, gw.url, "203.0.113.7", [stale] * 4) == [401, 401, 401, 429]
        # the same client's good key is not locked out by its stale one
        assert await guesses(http, gw.url, "203.0.113.7", [key]) == [200]
        # another client behind the same proxy, even with the same stale key, is not affected
        assert await guesses(http, gw.url, "203.0.113.8", [stale, key]) == [401, 200]
        # the blocked client cannot get out by writing another address in front of its own
        # (the proxy appends the real one; only the right-most untrusted hop counts)
        assert await guesses(http, gw.url, "198.51.100.1, 203.0.113.7", [stale]) == [429]
        # a peer that is not a trusted proxy cannot pick its address with the header
        direct = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=direct) as elsewhere:
            statuses = [
                (await guesses(elsewhere, gw.url, f"192.0.2.{n}", [stale]))[0]
                for n in range(4)
            ]
            assert statuses == [401, 401, 401, 429]


def test_ssl_context_refuses_half_a_configuration(pki: Pki) -> None:
    from mumu.broker.tls import TlsConfigError
    from mumu.gateway.settings import GatewaySettings
    from mumu.gateway.transport import ssl_context

    assert ssl_context(GatewaySettings()) is None
    with pytest.raises(TlsConfigError):
        ssl_context(GatewaySettings(tls=GatewayTlsSettings(cert_file=pki.server_cert)))
    ctx = ssl_context(GatewaySettings(tls=GatewayTlsSettings(
        cert_file=pki.server_cert, key_file=pki.server_key)))
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
