"""`mumu up` with TLS on: its nats-server requires client certificates, the gateway serves
HTTPS, and every child it starts gets the URL, CA and certificate it needs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mumu.broker.connect import NatsUnreachable, connect
from mumu.broker.settings import NatsSettings, NatsTlsSettings
from mumu.broker.tls import client_context
from tests.test_up import start_up, stop_up
from tests.tls_certs import Pki


@pytest.mark.slow
async def test_up_with_tls_on_nats_and_the_gateway(tmp_path: Path, pki: Pki) -> None:
    data_dir = tmp_path / ".mumu"
    proc, lines, _ = await start_up(data_dir, {
        "MUMU_NATS__SERVER_TLS__CERT_FILE": str(pki.server_cert),
        "MUMU_NATS__SERVER_TLS__KEY_FILE": str(pki.server_key),
        "MUMU_NATS__SERVER_TLS__CA_FILE": str(pki.ca),
        "MUMU_NATS__SERVER_TLS__VERIFY": "true",
        "MUMU_NATS__TLS__CERT_FILE": str(pki.client_cert),
        "MUMU_NATS__TLS__KEY_FILE": str(pki.client_key),
        "MUMU_GATEWAY__TLS__CERT_FILE": str(pki.server_cert),
        "MUMU_GATEWAY__TLS__KEY_FILE": str(pki.server_key),
        "MUMU_GATEWAY__TLS__CA_FILE": str(pki.ca),
    })
    try:
        assert lines["gateway"].startswith("https://127.0.0.1:"), lines
        assert lines["nats"].startswith("tls://127.0.0.1:"), lines
        connector = aiohttp.TCPConnector(ssl=client_context(pki.ca))
        async with aiohttp.ClientSession(connector=connector) as http, http.get(
            f"{lines['gateway']}/api/ready"
        ) as resp:
            # ready: every stage and the gateway hold a durable consumer, so each of them
            # reached the nats-server over TLS with a client certificate
            assert resp.status == 200, await resp.text()
        without_cert = NatsSettings(connect_timeout=2.0, tls=NatsTlsSettings(ca_file=pki.ca))
        # TLS 1.3: the server refuses the missing certificate after the handshake, so the
        # client reads its alert or, when the close wins the race, a reset (seen in CI)
        with pytest.raises(NatsUnreachable, match="CERTIFICATE_REQUIRED|Connection reset"):
            await connect(without_cert, name="stranger", url=lines["nats"])
        # the operator's credentials (authentication) over a client certificate (TLS)
        operator = Path(lines["operator credentials"].split()[0])
        with_cert = without_cert.model_copy(update={"credentials": operator, "tls": NatsTlsSettings(
            ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)})
        nc = await connect(with_cert, name="operator", url=lines["nats"])
        info = await nc.jetstream().stream_info("MUMU_RESULTS")
        assert info.config.name == "MUMU_RESULTS"
        await nc.close()
    finally:
        assert await stop_up(proc) == 0
