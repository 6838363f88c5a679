"""``mumu workspace credentials``: a workspace producer's NATS credentials.

Writes an nkey seed file that nats-py (``nkeys_seed=``) and the nats CLI (``--nkey``)
use as is; issuing and revoking rewrite the servers' users and reload them at once
(no restart).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

from mumu.broker.credentials import AuthDir, write_secret
from mumu.broker.reload import publish_users
from mumu.cli.common import table
from mumu.contracts.subjects import producer_inbox_prefix
from mumu.settings import Settings
from mumu.stages.registry import STAGES


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    creds = verbs.add_parser(
        "credentials",
        help="NATS producer credentials of a workspace: issue (--out), list, revoke",
    )
    creds.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    action = creds.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=str, help="write a new nkey seed file here (mode 0600)")
    action.add_argument("--revoke", action="store_true",
                        help="revoke the workspace's credentials (all, or --key)")
    action.add_argument("--ls", action="store_true", help="list the workspace's credentials")
    creds.add_argument("--key", help="with --revoke: only this public key (U...)")
    creds.set_defaults(func=run_credentials)


def users_of(settings: Settings) -> AuthDir:
    """The broker's users of this deployment (``MUMU_NATS__AUTH_DIR``, or the ``mumu up``
    directory's)."""
    users = AuthDir(settings.auth_dir)
    if not users.registry.exists():
        raise RuntimeError(
            f"no broker users in {users.path}: run this where `mumu up` runs, or set "
            "MUMU_NATS__AUTH_DIR to the directory whose auth.conf the servers include"
        )
    return users


async def grant_workspaces(settings: Settings, workspaces: list[str]) -> None:
    """Provisioned workspaces into the broker's users (ingest and the gateway get rights on
    their upload buckets), reloading the servers when one is new. Nothing to do for a
    deployment whose users this machine does not hold."""
    users = AuthDir(settings.auth_dir)
    if users.registry.exists() and users.add_workspaces(workspaces):
        await publish_users(settings.nats, users, STAGES.consumers())


def run_credentials(args: argparse.Namespace, settings: Settings) -> int:
    users = users_of(settings)
    ws = str(args.workspace_id)
    if args.ls:
        print(table(["public key", "issued"],
                    [[p.nkey, p.issued_at] for p in users.producers(ws)]))
        return 0
    if args.revoke:
        revoked = users.revoke_producers(ws, args.key)
        asyncio.run(publish_users(settings.nats, users, STAGES.consumers()))
        print(f"revoked {revoked} credential(s) of workspace {ws}; the servers reloaded "
              "and closed their connections")
        return 0 if revoked else 1
    out = Path(args.out)
    seed = users.issue_producer(ws)
    write_secret(out, seed)
    asyncio.run(publish_users(settings.nats, users, STAGES.consumers()))
    inbox = producer_inbox_prefix(ws)
    print(f"credentials: {out} (nkey seed, mode 0600; keep it secret)")
    print(f"inbox prefix: {inbox}  (connect with it: the only inbox this user may read)")
    print(f"nats-py: nats.connect(url, nkeys_seed={str(out)!r}, inbox_prefix={inbox!r})")
    print(f"nats CLI: nats --nkey {out} --inbox-prefix {inbox} ...")
    return 0
