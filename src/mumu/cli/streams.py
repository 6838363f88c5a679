"""``mumu streams apply|status``: declare JetStream streams and buckets, and watch them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import asyncpg
from nats.aio.client import Client as NATS

from mumu.broker.intake import rescaled, reseat_sources
from mumu.broker.jsapi import stream_config
from mumu.broker.streams import StreamChange, apply_all
from mumu.broker.workspaces import ensure_configured
from mumu.cli.common import table, with_nats
from mumu.cli.credentials import grant_workspaces
from mumu.cli.workspace import database_workspaces
from mumu.contracts import subjects
from mumu.ops.status import Status, gather
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("streams", help="apply or inspect JetStream streams and buckets")
    verbs = p.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="create or update streams from streams/*.json")
    apply.add_argument("--dir", type=Path, default=None, help="folder of stream configs")
    apply.add_argument(
        "--check", action="store_true",
        help="only report drift (exit 3 when the server differs from the files)",
    )
    apply.add_argument(
        "--replicas", type=int, default=None,
        help="replicas of every stream and bucket (3 on a NATS cluster; default: "
        "MUMU_NATS__STREAM_REPLICAS, else the files)",
    )
    apply.set_defaults(func=run_apply)
    st = verbs.add_parser(
        "status", help="per stream: how full; per consumer: pending, ack pending, redelivered, "
        "ack floor, age of the oldest unacked message, waiting pulls; per source (of "
        "MUMU_INGEST): lag and when it was last heard from",
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--all", action="store_true",
                    help="ephemeral consumers too (the gateway's feeds, replays)")
    st.set_defaults(func=run_status)


async def _workspaces(
    nc: NATS, settings: Settings, *, dry_run: bool, replicas: int | None
) -> list[StreamChange]:
    """Every workspace of the database gets its intake stream and buckets (with
    ``dry_run``: missing ones are reported); skipped, with the reason, without a database."""
    try:
        ids = await database_workspaces(settings)
    except (RuntimeError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"workspaces: skipped (database not reachable: {exc})")
        return []
    if dry_run:
        return [StreamChange(subjects.intake_stream(ws), "missing") for ws in ids
                if await stream_config(nc, subjects.intake_stream(ws)) is None]
    changes = await ensure_configured(nc, settings.nats, ids, replicas=replicas)
    await grant_workspaces(settings, ids)
    return changes


def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    replicas = args.replicas or settings.nats.stream_replicas

    async def work(nc: NATS) -> int:
        changes = await apply_all(nc, args.dir, dry_run=args.check, replicas=replicas)
        changes += await _workspaces(nc, settings, dry_run=args.check, replicas=replicas)
        if rescaled(changes):
            await reseat_sources(nc)
        for change in changes:
            print(change.describe())
        drifted = [c for c in changes if c.action in ("drift", "missing")]
        return 3 if drifted else 0

    return with_nats(settings, "streams", work)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def render_status(status: Status) -> str:
    """The two tables of ``mumu streams status``."""
    streams = table(
        ["stream", "kind", "messages", "bytes", "max bytes", "full", "consumers"],
        [[s.name, s.kind, s.messages, s.bytes, s.max_bytes or "-", _percent(s.fullness),
          s.consumers] for s in status.streams],
    )
    consumers = table(
        ["stream", "consumer", "pending", "ack pending", "redelivered", "ack floor",
         "oldest unacked", "waiting pulls"],
        [[c.stream, c.name, c.pending, c.ack_pending, c.redelivered, c.ack_floor,
          _age(c.oldest_unacked_age), c.waiting_pulls] for c in status.consumers],
    )
    letters = table(["dead letters of", "letters"], [list(row) for row in status.dead_letters])
    sources = table(
        ["stream", "source", "lag", "last heard", "error"],
        [[f.stream, f.source, f.lag, _age(f.silent_seconds), f.error or "-"]
         for f in status.sources],
    )
    return f"{streams}\n\n{consumers}\n\n{letters}\n\n{sources}"


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        status = await gather(nc, ephemeral=args.all)
        print(json.dumps(status.as_json(), indent=2) if args.json else render_status(status))
        return 0

    return with_nats(settings, "streams", work)
