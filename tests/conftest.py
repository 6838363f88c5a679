"""Fixtures: a real nats-server per test (free port, temporary store) and settings."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from mumu.bench.stream import apply_bench_stream
from mumu.broker.credentials import AuthDir
from mumu.broker.embedded import EmbeddedNats
from mumu.broker.reload import publish_users
from mumu.broker.roles import Role
from mumu.broker.streams import apply_all
from mumu.broker.workspaces import ensure_workspaces
from mumu.contracts.subjects import service_inbox_prefix
from mumu.settings import NatsSettings, Settings, StageRuntimeSettings
from mumu.stages.registry import STAGES

pytest_plugins = ["tests.pg_fixtures", "tests.tls_certs"]

DATA = Path(__file__).parent / "data"


FIRST = ("tests/gateway/test_memory_budget.py", "tests/test_up", "tests/audio/test_replicas.py",
         "tests/audio/test_bench.py", "tests/chaos", "tests/security", "tests/live",
         "tests/cluster", "tests/gateway")
"""The longest tests, handed out first so that no worker ends the run alone on one (the
single tests of 45-85 s first: `mumu up` and its data directory, the memory budget's 200
sockets, the transcribe replicas and benchmark; sorted by path they came last)."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist load`` each test goes to the next free worker, in
    collection order: the ``FIRST`` ones first. (Whole files per worker, measured the same
    day, took 971 s against 800 s: a long file kept one worker busy while the others
    idled; a module's fixtures are set up once per worker that runs its tests.)"""
    root = config.rootpath

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(root).as_posix()
        return next((i for i, p in enumerate(FIRST) if path.startswith(p)), len(FIRST))

    items.sort(key=rank)  # stable: the order inside a file is kept


BROKER_USERS: ContextVar[AuthDir | None] = ContextVar("broker_users", default=None)
"""The test's ``broker_users``, for helpers that provision a workspace with only a client."""


@pytest.fixture
def broker_users(tmp_path: Path) -> Iterator[AuthDir]:
    """The broker's users as `mumu up` makes them: every service role, the operator and
    the system user, each with its own nkey and permissions (no anonymous access)."""
    users = AuthDir(tmp_path / "nats-auth")
    users.ensure_services()
    users.render(STAGES.consumers())
    # the test-only pass-through stage has no role of its own: it runs as the operator
    shutil.copy(users.seed_file(Role.OPERATOR), users.creds / "passthrough.nk")
    token = BROKER_USERS.set(users)
    yield users
    BROKER_USERS.reset(token)


async def operator_connection(url: str | list[str], users: AuthDir,
                              client_class: type[NATS] = NATS, **options: Any) -> NATS:
    """A raw nats-py client with the operator's credentials (the SRE's view)."""
    client = client_class()
    await client.connect(
        url, nkeys_seed=str(users.seed_file(Role.OPERATOR)),
        inbox_prefix=service_inbox_prefix(Role.OPERATOR), **options,
    )
    return client


@pytest.fixture
async def nats_server(tmp_path: Path, broker_users: AuthDir) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", auth_file=broker_users.auth_conf)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats, broker_users: AuthDir) -> AsyncIterator[NATS]:
    client = await operator_connection(nats_server.url, broker_users)
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


async def provision(nc: NATS, *ids: str, users: AuthDir | None = None,
                    nats: NatsSettings | None = None) -> None:
    """What `mumu workspace create` does: the workspaces' intake streams and buckets, and
    the services' rights on them (ingest and the gateway use the upload buckets, ingest
    and transcribe the audio buckets, transcribe and reason the once records). ``users``:
    the broker's users, by default the ``broker_users`` fixture's; ``nats``: how to reach
    the broker to publish them, by default ``nc``'s URL with their credentials."""
    await ensure_workspaces(nc, ids)
    users = users or BROKER_USERS.get()
    if users is None or not users.add_workspaces(ids):
        return
    if nats is None:
        assert nc.connected_url is not None
        nats = NatsSettings(url=nc.connected_url.geturl(), credentials=users.creds)
    await publish_users(nats, users, STAGES.consumers())


@pytest.fixture
def workspaces(nc: NATS, streams: None, broker_users: AuthDir) -> Ensure:
    """``await workspaces("ws-a", "ws-b")``: ``provision``; raw publishes on
    ``mumu.ingest.*.<ws>`` land."""

    async def ensure(*ids: str) -> None:
        await provision(nc, *ids)

    return ensure


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path, broker_users: AuthDir) -> Settings:
    return Settings(
        data_dir=tmp_path / "mumu",
        nats=NatsSettings(url=nats_server.url, credentials=broker_users.creds),
        stage=StageRuntimeSettings(
            ack_wait=5.0, backoff=[0.2, 0.4, 0.8], max_deliver=3, drain_timeout=5.0,
            fetch_timeout=0.2,
        ),
    )


def nats_env(server: EmbeddedNats) -> dict[str, str]:
    """Environment for a mumu child process on a fixture server: its URL and the
    directory of role seeds (each process picks its own role's seed)."""
    if server.auth_file is None:
        raise RuntimeError("the server was started without users")
    return {
        "MUMU_NATS__URL": server.url,
        "MUMU_NATS__CREDENTIALS": str(server.auth_file.parent / "creds"),
    }
