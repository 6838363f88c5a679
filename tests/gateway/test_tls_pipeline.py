"""Acceptance: one spoken question end to end with TLS on NATS (client certificates
required) and on the gateway (HTTPS), through the real stages and the real Whisper model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.settings import NatsServerTlsSettings, NatsSettings, NatsTlsSettings
from mumu.broker.streams import apply_all
from mumu.broker.tls import client_context, is_encrypted
from mumu.gateway.deps import DEPS
from mumu.gateway.settings import GatewayTlsSettings
from mumu.settings import Settings, StageRuntimeSettings
from tests.gateway.conftest import WS_A, gateway_settings, serving
from tests.gateway.pipeline import SPEECH, assert_answer_is_the_stages, pipeline_settings, stages
from tests.gateway.test_pipeline import words
from tests.harness import Collector
from tests.tls_certs import Pki

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def mtls_nats(
    tmp_path: Path, pki: Pki, broker_users: AuthDir
) -> AsyncIterator[EmbeddedNats]:
    """The test server with its users (no anonymous access) and mutual TLS."""
    tls = NatsServerTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key,
                                ca_file=pki.ca, verify=True)
    async with EmbeddedNats(tmp_path / "nats", auth_file=broker_users.auth_conf,
                            tls=tls) as server:
        yield server


async def test_a_spoken_question_end_to_end_with_tls_on_nats_and_the_gateway(
    mtls_nats: EmbeddedNats, pki: Pki, tmp_path: Path, model_cache: Path,
    broker_users: AuthDir,
) -> None:
    nats = NatsSettings(url=mtls_nats.url, credentials=broker_users.creds, tls=NatsTlsSettings(
        ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key))
    base = Settings(
        data_dir=tmp_path / "mumu", nats=nats,
        stage=StageRuntimeSettings(ack_wait=5.0, backoff=[0.2, 0.4, 0.8], max_deliver=3,
                                   drain_timeout=5.0, fetch_timeout=0.2),
    )
    cfg = gateway_settings(
        pipeline_settings(base, model_cache), wait_timeout=120.0,
        tls=GatewayTlsSettings(cert_file=pki.server_cert, key_file=pki.server_key),
    )
    assert mtls_nats.url.startswith("tls://")
    nc = await connect(cfg.nats, name="tls-e2e")
    try:
        assert is_encrypted(nc._transport)
        await apply_all(nc)
        connector = aiohttp.TCPConnector(ssl=client_context(pki.ca))
        async with stages(cfg), serving(cfg) as gw, aiohttp.ClientSession(
            connector=connector
        ) as http:
            assert gw.url.startswith("https://")
            assert is_encrypted(gw.app[DEPS].nc._transport)  # the gateway's own NATS link
            form = aiohttp.FormData()
            form.add_field("audio", (SPEECH / "en05.wav").read_bytes(), filename="q.wav")
            async with Collector(nc, "mumu.answer.>") as seen, http.post(
                f"{gw.url}/api/ask?wait=true", data=form,
                headers={"Authorization": f"Bearer {gw.token(WS_A, 'tls')}"},
            ) as resp:
                body = await resp.json()
    finally:
        await nc.drain()
    assert resp.status == 200, body
    # "Can you tell me how many people live in the capital city?"
    assert {"how", "many", "people", "live", "capital", "city"} <= set(words(body["transcript"]))
    assert body["language"] == "en"
    # the answer the caller got over HTTPS is the reason stage's answer over TLS NATS
    assert_answer_is_the_stages(seen, body)
