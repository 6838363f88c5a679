"""``mumu auth init|rotate|show``: the broker's service users of a deployment.

``init`` makes (or completes) an auth directory: one nkey seed per service role, the
operator and the system user, and the ``auth.conf`` every nats-server includes. A
deployment mounts each service's seed into that service only (docker-compose.yml does).
``rotate`` replaces one role's seed (a leaked file): the old one stops working at once,
and the service reconnects as soon as it can read the new one.
"""

from __future__ import annotations

import argparse
import asyncio

from mumu.broker.credentials import AuthDir
from mumu.broker.reload import publish_users
from mumu.broker.roles import Role
from mumu.cli.common import table
from mumu.settings import Settings
from mumu.stages.registry import STAGES


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("auth", help="the broker's users: service credentials and auth.conf")
    verbs = p.add_subparsers(dest="verb", required=True)
    init = verbs.add_parser(
        "init", help="create the service credentials and auth.conf (MUMU_NATS__AUTH_DIR)"
    )
    init.set_defaults(func=run_init)
    rotate = verbs.add_parser(
        "rotate", help="replace one role's credentials; the servers reload at once"
    )
    rotate.add_argument("role", choices=[str(r) for r in Role])
    rotate.set_defaults(func=run_rotate)
    show = verbs.add_parser("show", help="every user: role or workspace and public key")
    show.set_defaults(func=run_show)


def _users(settings: Settings) -> AuthDir:
    return AuthDir(settings.auth_dir)


def run_init(args: argparse.Namespace, settings: Settings) -> int:
    users = _users(settings)
    users.ensure_services()
    users.render(STAGES.consumers())
    print(f"auth file: {users.auth_conf}  (include it in every nats-server config)")
    for role in Role:
        print(f"{role}: {users.seed_file(role)}")
    return 0


def run_rotate(args: argparse.Namespace, settings: Settings) -> int:
    users = _users(settings)
    role = Role(args.role)
    users.revoke_service(role)
    users.ensure_services()
    asyncio.run(publish_users(settings.nats, users, STAGES.consumers()))
    print(f"{role}: new credentials in {users.seed_file(role)}; the old ones are refused")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    users = _users(settings)
    rows: list[list[object]] = [[str(role), users.public_key_of(role) or "-"] for role in Role]
    rows += [[f"producer {p.workspace}", p.nkey] for p in users.producers()]
    print(table(["user", "public key"], rows))
    return 0
