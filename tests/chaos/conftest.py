"""Fixtures of the chaos suite: a PostgreSQL cluster and a nats-server of its own (the test
stops and restarts both; no other test shares them), two workspaces."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from mumu.broker.credentials import AuthDir, write_secret
from mumu.broker.embedded import EmbeddedNats
from mumu.crypto import Keyring, MasterKey
from mumu.db.datakeys import DataKeys
from mumu.db.embedded import EmbeddedPostgres
from mumu.db.migrate import apply_migrations, ensure_app_login
from mumu.db.urls import with_user
from mumu.db.workspaces import create_workspace
from mumu.stages.registry import STAGES
from tests.chaos.procs import free_port
from tests.loadgen import Tenant
from tests.pg_fixtures import pgdata_dir


@dataclass
class Database:
    server: EmbeddedPostgres
    admin_url: str
    app_url: str
    master_keys: str
    tenants: list[Tenant]


@pytest.fixture
async def chaos_pg() -> AsyncIterator[Database]:
    """Migrated, with an application login and two workspaces."""
    with pgdata_dir() as pgdata:
        server = EmbeddedPostgres(pgdata)
        await server.start()
        try:
            admin_url = server.url()
            app_url = with_user(admin_url, "mumu_chaos_app", secrets.token_urlsafe(12))
            master = MasterKey.generate("k1").encoded()
            admin = await asyncpg.connect(admin_url)
            try:
                await apply_migrations(admin)
                await ensure_app_login(admin, app_url)
                keys = DataKeys(Keyring.parse(master))
                tenants = [Tenant(c.workspace_id, c.api_key) for c in
                           [await create_workspace(admin, keys, n) for n in ("chaos-a", "chaos-b")]]
            finally:
                await admin.close()
            yield Database(server, admin_url, app_url, master, tenants)
        finally:
            await server.stop()


@dataclass
class Broker:
    server: EmbeddedNats
    users: AuthDir
    producer_seeds: dict[str, Path]
    """Workspace → its producer credentials (the live streams publish with them)."""


@pytest.fixture
async def chaos_nats(tmp_path: Path, broker_users: AuthDir,
                     chaos_pg: Database) -> AsyncIterator[Broker]:
    """A single nats-server with file storage on a fixed port (a restart keeps the URL),
    users for every service and one producer per workspace."""
    workspaces = [t.workspace for t in chaos_pg.tenants]
    broker_users.add_workspaces(workspaces)
    seeds: dict[str, Path] = {}
    for ws in workspaces:
        seeds[ws] = tmp_path / "producers" / f"{ws}.nk"
        write_secret(seeds[ws], broker_users.issue_producer(ws))
    broker_users.render(STAGES.consumers())
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), auth_file=broker_users.auth_conf)
    await server.start()
    try:
        yield Broker(server, broker_users, seeds)
    finally:
        await server.stop()
