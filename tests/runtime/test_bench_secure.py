"""`mumu bench runtime --secure` really measures a server with users and mutual TLS
against an anonymous plaintext one (real nats-servers, throw-away CA)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from mumu.bench import runtime_secure
from mumu.bench.relay import Relay
from mumu.bench.secure_broker import Broker, plain_broker, secure_broker
from mumu.bench.stream import BENCH_HOPS
from mumu.broker.connect import connect
from mumu.broker.credentials import AuthDir, new_seed, write_secret
from mumu.broker.tls import client_context
from tests.bench_run import run_bench


@pytest.fixture
async def brokers(tmp_path: Path) -> AsyncIterator[tuple[Broker, Broker]]:
    async with plain_broker(tmp_path / "plain") as plain, \
            secure_broker(tmp_path / "secure") as secure:
        yield plain, secure


async def test_the_secure_server_refuses_anonymous_plaintext_and_certless_clients(
    brokers: tuple[Broker, Broker], tmp_path: Path,
) -> None:
    plain, secure = brokers
    assert secure.server.url.startswith("tls://")
    assert await runtime_secure.security_checks(secure) == {
        "anonymous_refused": True,
        "without_client_certificate_refused": True,
        "plaintext_refused": True,
        "credentials_accepted": True,
    }
    # the checks can fail: the plain server lets all of it in
    assert not await runtime_secure._refused(plain.server.url)
    assert not await runtime_secure._plaintext_refused(plain)
    # a seed the server does not know is refused too, even with a good certificate
    unknown = tmp_path / "unknown.nk"
    write_secret(unknown, new_seed())
    tls = secure.nats.tls
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            secure.server.url, nkeys_seed=str(unknown), allow_reconnect=False,
            tls=client_context(tls.ca_file, tls.cert_file, tls.key_file),
        )


async def test_the_secure_server_holds_every_production_user_and_one_per_relay(
    brokers: tuple[Broker, Broker],
) -> None:
    _, secure = brokers
    creds = secure.nats.credentials
    assert creds is not None
    production = AuthDir(creds.parent)
    # ingest, transcribe, reason, persist, gateway, exporter, operator, a producer; system
    # (SYS); the three relays
    assert len(production.producers()) == 1
    assert secure.users == 9 + 3
    assert sorted(p.name for p in creds.glob("bench-relay*.nk")) == [
        f"{Relay(hop).name}.nk" for hop in range(3)
    ]


async def test_a_relay_may_publish_its_next_hop_and_nothing_else(
    brokers: tuple[Broker, Broker],
) -> None:
    _, secure = brokers
    violations: list[str] = []
    seen = asyncio.Event()

    def violated(subject: str) -> None:
        violations.append(subject)
        seen.set()

    relay = Relay(0)
    nc = await connect(secure.nats, "relay-check", role=relay.name, on_violation=violated)
    try:
        await nc.publish(relay.dst.for_workspace("bench"), b"{}")
        await nc.flush()
        forbidden = BENCH_HOPS[3].for_workspace("bench")  # another relay's output
        await nc.publish(forbidden, b"{}")
        await nc.flush()
        async with asyncio.timeout(5):
            await seen.wait()
    finally:
        await nc.close()
    assert violations == [forbidden]


def test_bench_runtime_secure_smoke(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "runtime", "--secure", "--events", "300",
                       "--latency-events", "100", "--rounds", "2", "--concurrency", "16",
                       result="runtime-secure")
    assert all(result["secure_server"]["checks"].values())
    for side in ("plain", "secure"):
        assert result[side]["rounds_events_moved"] == [300, 300], side  # each event once
        p = result[side]["per_hop_ms"]
        assert p["p50"] <= p["p99"] <= p["max"]
    plain, secure = result["plain"], result["secure"]
    expected = [s / p for s, p in zip(secure["rounds_events_per_s"],
                                      plain["rounds_events_per_s"], strict=True)]
    assert result["round_ratios"] == pytest.approx(expected, rel=0.01)
    # CPU of the runtime and of the server while each chain ran, per event
    for side in (plain, secure):
        assert len(side["rounds_cpu_us_per_event"]) == 2
        assert all(own > 0 for own, _ in side["rounds_cpu_us_per_event"])
        assert sum(server for _, server in side["rounds_cpu_us_per_event"]) > 0
    cpu_ratios = [sum(s) / sum(p) for s, p in zip(secure["rounds_cpu_us_per_event"],
                                                  plain["rounds_cpu_us_per_event"], strict=True)]
    assert result["round_cpu_ratios"] == pytest.approx(cpu_ratios, rel=0.02)
    assert result["floor"] == {"throughput_ratio": 0.9, "p99_per_hop_ms": 20.0}
    # the verdict is the floor applied to what was measured
    assert result["meets_floor"] == (
        result["throughput_ratio"] >= 0.9 and secure["per_hop_ms"]["p99"] <= 20.0)

