"""NATS client connections over TLS to a real nats-server (the embedded one, with TLS on)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mumu.broker.connect import NatsUnreachable, connect
from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.settings import NatsServerTlsSettings, NatsSettings, NatsTlsSettings
from mumu.broker.tls import TlsConfigError, client_context, is_encrypted
from tests.tls_certs import Pki


def client(url: str, **tls: object) -> NatsSettings:
    return NatsSettings(url=url, connect_timeout=2.0, tls=NatsTlsSettings.model_validate(tls))


@pytest.fixture
async def tls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[EmbeddedNats]:
    tls = NatsServerTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key)
    async with EmbeddedNats(tmp_path / "nats", tls=tls) as server:
        yield server


@pytest.fixture
async def mtls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[EmbeddedNats]:
    tls = NatsServerTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key,
                                ca_file=pki.ca, verify=True)
    async with EmbeddedNats(tmp_path / "nats", tls=tls) as server:
        yield server


async def roundtrip(settings: NatsSettings) -> bytes:
    nc = await connect(settings, name="tls-test")
    try:
        assert is_encrypted(nc._transport)
        sub = await nc.subscribe("tls.echo")
        await nc.publish("tls.echo", b"over tls")
        return (await sub.next_msg(timeout=2.0)).data
    finally:
        await nc.close()


async def test_a_client_with_the_ca_talks_to_the_tls_server(
    tls_server: EmbeddedNats, pki: Pki
) -> None:
    assert tls_server.url.startswith("tls://127.0.0.1:")
    assert await roundtrip(client(tls_server.url, ca_file=pki.ca)) == b"over tls"
    # a nats:// URL with a CA set is TLS too (the settings, not the scheme, decide)
    plain_scheme = tls_server.url.replace("tls://", "nats://")
    assert await roundtrip(client(plain_scheme, ca_file=pki.ca)) == b"over tls"


async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: EmbeddedNats, other_pki: Pki
) -> None:
    with pytest.raises(NatsUnreachable) as caught:
        await connect(client(tls_server.url, ca_file=other_pki.ca), name="tls-test")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_without_the_ca_the_system_roots_refuse_the_test_ca(tls_server: EmbeddedNats) -> None:
    with pytest.raises(NatsUnreachable) as caught:
        await connect(client(tls_server.url), name="tls-test")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_a_name_the_certificate_does_not_carry_is_refused(
    tls_server: EmbeddedNats, pki: Pki
) -> None:
    settings = client(tls_server.url, ca_file=pki.ca, server_name="nats.example.org")
    with pytest.raises(NatsUnreachable) as caught:
        await connect(settings, name="tls-test")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    localhost = client(tls_server.url, ca_file=pki.ca, server_name="localhost")
    assert await roundtrip(localhost) == b"over tls"


async def test_with_verify_on_only_a_client_certificate_of_the_ca_gets_in(
    mtls_server: EmbeddedNats, pki: Pki, other_pki: Pki
) -> None:
    with pytest.raises(NatsUnreachable, match="CERTIFICATE_REQUIRED"):
        await connect(client(mtls_server.url, ca_file=pki.ca), name="no-cert")
    with pytest.raises(NatsUnreachable, match="BAD_CERTIFICATE|UNKNOWN_CA"):
        await connect(client(mtls_server.url, ca_file=pki.ca, cert_file=other_pki.client_cert,
                             key_file=other_pki.client_key), name="foreign-cert")
    settings = client(mtls_server.url, ca_file=pki.ca, cert_file=pki.client_cert,
                      key_file=pki.client_key)
    assert await roundtrip(settings) == b"over tls"


async def test_a_client_that_wants_tls_refuses_a_plaintext_server(
    nats_server: EmbeddedNats, pki: Pki, broker_users: AuthDir
) -> None:
    """nats-py would carry on in plaintext when the server does not ask for TLS."""
    for settings in (client(nats_server.url.replace("nats://", "tls://")),
                     client(nats_server.url, ca_file=pki.ca)):
        settings.credentials = broker_users.creds  # the users of the test server
        with pytest.raises(NatsUnreachable, match="does not offer TLS"):
            await connect(settings, name="tls-test")


async def test_a_certificate_without_its_key_is_a_settings_error(
    tls_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(TlsConfigError, match="needs its key"):
        await connect(client(tls_server.url, ca_file=pki.ca, cert_file=pki.client_cert),
                      name="tls-test")
    with pytest.raises(TlsConfigError, match="cannot load CA file"):
        await connect(client(tls_server.url, ca_file=tmp_path / "missing.pem"), name="tls-test")


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_client_reconnects_over_tls_and_never_stays_on_a_plaintext_server(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mumu.broker.connect")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tls = NatsServerTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key)
    first = EmbeddedNats(tmp_path / "tls", port=port, tls=tls)
    await first.start()
    nc = await connect(client(first.url, ca_file=pki.ca), name="tls-reconnect")
    try:
        sub = await nc.subscribe("tls.echo")
        await first.stop()
        # the same address now answers in plaintext: the client must not settle there
        async with EmbeddedNats(tmp_path / "plain", port=port):
            await eventually(lambda: "reconnected without TLS" in caplog.text)
        async with EmbeddedNats(tmp_path / "tls", port=port, tls=tls):
            await eventually(lambda: nc.is_connected and is_encrypted(nc._transport))
            await nc.publish("tls.echo", b"back over tls")
            assert (await sub.next_msg(timeout=5.0)).data == b"back over tls"
    finally:
        await nc.close()


def test_a_client_with_a_ca_file_trusts_that_ca_only(pki: Pki) -> None:
    system = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    system.load_verify_locations(cafile=pki.ca)
    assert len(system.get_ca_certs()) > 1  # what a default context would trust here
    pinned = client_context(ca_file=pki.ca)
    assert len(pinned.get_ca_certs()) == 1  # the configured CA, not the public ones too
    assert pinned.check_hostname and pinned.verify_mode == ssl.CERT_REQUIRED
