"""Fixtures: a real nats-server per test (free port, temporary store) and settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import apply_bench_stream
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspaces
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings

pytest_plugins = ["tests.pg_fixtures"]

DATA = Path(__file__).parent / "data"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def streams(nc: NATS) -> None:
    """Every stream and bucket of streams/ applied on the test server, and the
    benchmarks' MUMU_BENCH (the pass-through test stage consumes it)."""
    await apply_all(nc)
    await apply_bench_stream(nc)


Ensure = Callable[..., Awaitable[None]]


@pytest.fixture
def workspaces(nc: NATS, streams: None) -> Ensure:
    """``await workspaces("ws-a", "ws-b")``: their intake streams and upload buckets exist
    (what ``mumu workspace create`` does), so raw publishes on ``mumu.ingest.*.<ws>`` land."""

    async def ensure(*ids: str) -> None:
        await ensure_workspaces(nc, ids)

    return ensure


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "mumu",
        nats=NatsSettings(url=nats_server.url),
        stage=StageRuntimeSettings(
            ack_wait=5.0, backoff=[0.2, 0.4, 0.8], max_deliver=3, drain_timeout=5.0,
            fetch_timeout=0.2,
        ),
    )
