"""``mumu workspace limits|usage``: a workspace's quotas and where it stands against them.

``limits`` shows the effective limits (settings' defaults, PostgreSQL overrides marked)
and sets or drops overrides (``--set name=value``, ``--set name=default``); ``usage``
reads the shared usage counters (JetStream KV ``mumu-quota``) the gateway and the stages
enforce with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.connect import connect
from mumu.cli.common import table
from mumu.db.bootstrap import admin_url_of
from mumu.db.quotas import limit_overrides, set_limit_overrides
from mumu.quota.gate import QuotaGate, Standing
from mumu.quota.limits import LIMIT_NAMES, Limits, parse_limit
from mumu.settings import Settings


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    limits = verbs.add_parser(
        "limits", help="a workspace's quotas (defaults from settings, overrides marked)"
    )
    limits.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    limits.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", dest="assignments",
        help=f"override a limit ({', '.join(LIMIT_NAMES)}); VALUE `default` drops the "
        "override; repeatable",
    )
    limits.add_argument("--json", action="store_true", help="machine-readable output")
    limits.set_defaults(func=run_limits)
    usage = verbs.add_parser("usage", help="where a workspace stands against its quotas now")
    usage.add_argument("workspace_id", type=uuid.UUID, help="the workspace id (a UUID)")
    usage.add_argument("--json", action="store_true", help="machine-readable output")
    usage.set_defaults(func=run_usage)


def parse_assignments(assignments: list[str]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        values[name.strip()] = parse_limit(name.strip(), text.strip())
    return values


async def _admin(settings: Settings, ws: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(admin_url_of(settings.database, settings.data_dir))
    if not await conn.fetchval("SELECT mumu.workspace_exists($1::uuid)", ws):
        await conn.close()
        raise RuntimeError(f"workspace {ws} does not exist")
    return conn


def run_limits(args: argparse.Namespace, settings: Settings) -> int:
    ws = str(args.workspace_id)
    try:
        changes = parse_assignments(args.assignments)
    except ValueError as exc:
        raise SystemExit(f"mumu workspace limits: {exc}") from exc

    async def main() -> Limits:
        conn = await _admin(settings, ws)
        try:
            if changes:
                await set_limit_overrides(conn, ws, changes)
            overrides = await limit_overrides(conn, ws)
        finally:
            await conn.close()
        return Limits.defaults(settings.quota).with_overrides(overrides)

    limits = asyncio.run(main())
    defaults = Limits.defaults(settings.quota).as_dict()
    values = limits.as_dict()
    if args.json:
        print(json.dumps({"workspace_id": ws, "limits": {
            name: {"value": values[name], "default": defaults[name],
                   "overridden": name in limits.overridden} for name in LIMIT_NAMES}}))
        return 0
    print(table(["limit", "value", "source", "default"], [
        [name, f"{values[name]:g}", "override" if name in limits.overridden else "default",
         f"{defaults[name]:g}"] for name in LIMIT_NAMES]))
    return 0


def run_usage(args: argparse.Namespace, settings: Settings) -> int:
    ws = str(args.workspace_id)
    fresh = settings.quota.model_copy(update={"limits_cache_seconds": 0.0})

    async def main() -> list[Standing]:
        conn = await _admin(settings, ws)
        nc: NATS | None = None
        try:
            nc = await connect(settings.nats, name="mumu-cli-usage")

            async def pool() -> asyncpg.Connection:
                return conn

            gate = QuotaGate(fresh, pool)
            gate.bind(nc.jetstream())
            return await gate.standing(ws)
        finally:
            if nc is not None:
                await nc.drain()
            await conn.close()

    rows = asyncio.run(main())
    if args.json:
        print(json.dumps({"workspace_id": ws, "usage": {
            s.limit: {"limit": s.value, "used": s.used, "remaining": s.remaining,
                      "overridden": s.overridden} for s in rows}}))
        return 0
    print(table(["limit", "value", "used", "remaining", "source"], [
        [s.limit, f"{s.value:g}", f"{s.used:g}", f"{s.remaining:g}",
         "override" if s.overridden else "default"] for s in rows]))
    print("(asks_per_minute used: tokens spent and not yet refilled; longest_audio used: "
          "the longest audio today, UTC)")
    return 0
