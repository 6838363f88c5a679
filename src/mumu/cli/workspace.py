"""``mumu workspace create|ls|key``: tenants and their API keys (owner role)."""

from __future__ import annotations

import argparse
import sys
import uuid

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS

from mumu.broker.workspaces import ensure_configured
from mumu.cli import api_keys, credentials, quota
from mumu.cli.common import table, with_admin, with_nats
from mumu.cli.credentials import grant_workspaces
from mumu.contracts import subjects
from mumu.db.bootstrap import admin_url_of, keyring_of
from mumu.db.datakeys import DataKeys
from mumu.db.workspaces import add_api_key, create_workspace, list_workspaces, workspace_ids
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("workspace", help="create and list workspaces (tenants)")
    verbs = p.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser(
        "create", help="a new workspace; prints its id and an API key (shown once)"
    )
    create.add_argument("name")
    create.set_defaults(func=run_create)
    ls = verbs.add_parser("ls", help="every workspace with its key counts")
    ls.set_defaults(func=run_ls)
    key = verbs.add_parser("key", help="a new API key for a workspace (shown once)")
    key.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    key.set_defaults(func=run_key)
    credentials.register(verbs)
    api_keys.register(verbs)
    quota.register(verbs)


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    keys = DataKeys(keyring_of(settings.master_keys, settings.data_dir, settings.database))
    made: list[str] = []

    async def work(conn: asyncpg.Connection) -> int:
        created = await create_workspace(conn, keys, args.name)
        made.append(created.workspace_id)
        print(f"workspace: {created.workspace_id}")
        print(f"api key: {created.api_key}")
        print("(the API key is shown only now; only its hash is stored)")
        return 0

    code = with_admin(settings, work)
    ensure_on_broker(settings, made)
    return code


def ensure_on_broker(settings: Settings, workspaces: list[str]) -> bool:
    """The workspaces' intake streams and upload buckets; a warning (not a failure: the
    workspace exists, and the gateway or `mumu streams apply` makes them later) when NATS
    is not configured or not reachable."""
    if not workspaces:
        return True
    later = ("its producers cannot publish until `mumu streams apply` runs with "
             "MUMU_NATS__URL set")
    if not settings.nats.url:
        print(f"intake: skipped, MUMU_NATS__URL is not set; {later}", file=sys.stderr)
        return False

    async def ensure(nc: NATS) -> None:
        await ensure_configured(nc, settings.nats, workspaces)
        await grant_workspaces(settings, workspaces)

    try:
        with_nats(settings, "workspace", ensure)
    except (RuntimeError, nats.errors.Error, TimeoutError) as exc:
        print(f"intake: not created ({exc}); {later}", file=sys.stderr)
        return False
    for ws in workspaces:
        print(f"intake: stream {subjects.intake_stream(ws)}, "
              f"upload bucket {subjects.upload_bucket(ws)}, "
              f"audio bucket {subjects.audio_bucket(ws)}, "
              f"once records {subjects.once_bucket(ws)}")
    return True


async def database_workspaces(settings: Settings) -> list[str]:
    """Every workspace in the database (owner URL); ``RuntimeError`` or a connection
    error when there is none or it is down."""
    conn = await asyncpg.connect(admin_url_of(settings.database, settings.data_dir),
                                 timeout=settings.nats.connect_timeout)
    try:
        return await workspace_ids(conn)
    finally:
        await conn.close()


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = await list_workspaces(conn)
        print(table(
            ["workspace", "name", "created", "api keys", "data keys"],
            [[w.workspace_id, w.name, f"{w.created_at:%Y-%m-%d %H:%M}", w.api_keys,
              w.data_key_versions] for w in rows],
        ))
        return 0

    return with_admin(settings, work)


def run_key(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        ws = str(args.workspace_id)
        if not await conn.fetchval("SELECT mumu.workspace_exists($1::uuid)", ws):
            raise RuntimeError(f"workspace {ws} does not exist")
        print(f"api key: {await add_api_key(conn, ws)}")
        return 0

    return with_admin(settings, work)
