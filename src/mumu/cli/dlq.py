"""``mumu dlq ls|show|replay|purge``: inspect and act on dead letters."""

from __future__ import annotations

import argparse
import json

from nats.aio.client import Client as NATS

from mumu.cli.common import table, with_nats
from mumu.contracts import headers as h
from mumu.ops import dlq
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    verbs = p.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list dead letters")
    ls.add_argument("--stage", help="only this stage's dead letters")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=run_ls)
    show = verbs.add_parser("show", help="headers and payload of one dead letter")
    show.add_argument("seq", type=int, help="sequence in the MUMU_DLQ stream (from `dlq ls`)")
    show.set_defaults(func=run_show)
    rp = verbs.add_parser("replay", help="publish dead letters back to their original subject")
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("seq", type=int, nargs="?", help="one dead letter")
    group.add_argument("--all", action="store_true", help="every dead letter (of --stage)")
    rp.add_argument("--stage", help="with --all: only this stage's dead letters")
    rp.set_defaults(func=run_replay)
    purge = verbs.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("--stage", help="only this stage's dead letters")
    purge.add_argument("--yes", action="store_true", help="do not ask")
    purge.set_defaults(func=run_purge)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        rows = [
            [s.seq, s.time.strftime("%Y-%m-%d %H:%M:%S"), s.headers.get(h.DLQ_STAGE, "?"),
             s.headers.get(h.DLQ_CODE, "?"), s.headers.get(h.DLQ_SUBJECT, "?"),
             s.headers.get(h.DLQ_REASON, "")[:70]]
            async for s in dlq.letters(nc, args.stage, args.limit)
        ]
        print(table(["seq", "time (UTC)", "stage", "code", "subject", "reason"], rows))
        return 0

    return with_nats(settings, "dlq", work)


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        stored = await dlq.letter(nc, args.seq)
        print(f"seq: {stored.seq}\nsubject: {stored.subject}")
        for key, value in sorted(stored.headers.items()):
            print(f"{key}: {value}")
        try:
            body = json.dumps(json.loads(stored.data), indent=2)
        except (ValueError, UnicodeDecodeError):
            body = f"<{len(stored.data)} bytes of binary payload>"
        print(f"\n{body}")
        return 0

    return with_nats(settings, "dlq", work)


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        if args.all:
            targets = [s async for s in dlq.letters(nc, args.stage)]
        else:
            targets = [await dlq.letter(nc, args.seq)]
        for n, stored in enumerate(targets, 1):
            subject = await dlq.replay(nc, stored)
            print(f"[{n}/{len(targets)}] dead letter {stored.seq} → {subject}")
        return 0

    return with_nats(settings, "dlq", work)


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        scope = f"of stage {args.stage}" if args.stage else "of every stage"
        if input(f"delete all dead letters {scope}? [y/N] ").strip().lower() != "y":
            return 1

    async def work(nc: NATS) -> int:
        print(f"purged {await dlq.purge(nc, args.stage)} dead letters")
        return 0

    return with_nats(settings, "dlq", work)
