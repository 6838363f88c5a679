"""``mumu workspace api-key create|ls|revoke``: a workspace's API keys (owner role).

Revoking takes effect on every gateway replica within about a second: session tokens
issued for the key are refused and its open websockets closed (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import uuid

import asyncpg

from mumu.cli.common import table, with_admin
from mumu.db.api_keys import list_keys, revoke_key
from mumu.db.workspaces import add_api_key
from mumu.settings import Settings


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = verbs.add_parser("api-key", help="API keys of a workspace: create, ls, revoke")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new API key (shown once)")
    create.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    create.set_defaults(func=run_create)
    ls = actions.add_parser("ls", help="the workspace's API keys (id, prefix, state)")
    ls.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    ls.set_defaults(func=run_ls)
    revoke = actions.add_parser(
        "revoke", help="revoke an API key: its session tokens stop working within seconds")
    revoke.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    revoke.add_argument("key", help="the key's id (from `ls`), its prefix (mumu_xxxxxx) or "
                        "the key itself")
    revoke.add_argument("--json", action="store_true", help="one JSON document")
    revoke.set_defaults(func=run_revoke)


async def _exists(conn: asyncpg.Connection, ws: str) -> None:
    if not await conn.fetchval("SELECT mumu.workspace_exists($1::uuid)", ws):
        raise RuntimeError(f"workspace {ws} does not exist")


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        ws = str(args.workspace_id)
        await _exists(conn, ws)
        print(f"api key: {await add_api_key(conn, ws)}")
        print("(the API key is shown only now; only its hash is stored)")
        return 0

    return with_admin(settings, work)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        ws = str(args.workspace_id)
        await _exists(conn, ws)
        keys = await list_keys(conn, ws)
        if args.json:
            print(json.dumps([{
                "key_id": k.key_id, "prefix": k.prefix, "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            } for k in keys]))
            return 0
        print(table(["key id", "prefix", "created", "revoked"], [
            [k.key_id, k.prefix, f"{k.created_at:%Y-%m-%d %H:%M}",
             f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-"] for k in keys]))
        return 0

    return with_admin(settings, work)


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        ws = str(args.workspace_id)
        await _exists(conn, ws)
        revoked = await revoke_key(conn, ws, args.key)
        if args.json:
            print(json.dumps({"workspace_id": ws, "revoked": revoked}))
        elif revoked:
            print(f"revoked API key {', '.join(revoked)} of workspace {ws}; its session tokens "
                  "are refused from now on (every gateway within seconds)")
        else:
            print(f"no live API key of workspace {ws} matches {args.key!r}")
        return 0 if revoked else 1

    return with_admin(settings, work)
