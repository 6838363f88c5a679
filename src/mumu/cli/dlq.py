"""``mumu dlq ls|show|replay|purge``: inspect and act on dead letters."""

from __future__ import annotations

import argparse
import json

from nats.aio.client import Client as NATS

from mumu.cli.common import table, with_nats
from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.ops import dlq, letters
from mumu.settings import Settings

WORKSPACE_HELP = (f"only this workspace's dead letters ({subjects.DLQ_NO_WORKSPACE}: those whose "
                  "message named no valid workspace)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    verbs = p.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="dead letters counted by stage and reason")
    ls.add_argument("--stage", help="only this stage's dead letters")
    ls.add_argument("--workspace", help=WORKSPACE_HELP)
    ls.add_argument("--each", action="store_true", help="one line per letter instead")
    ls.add_argument("--limit", type=int, default=100, help="with --each: at most this many")
    ls.add_argument("--json", action="store_true", help="machine-readable")
    ls.set_defaults(func=run_ls)
    show = verbs.add_parser("show", help="headers and body of one dead letter")
    show.add_argument("seq", type=int, help="sequence in the MUMU_DLQ stream (from `dlq ls`)")
    show.add_argument("--json", action="store_true", help="machine-readable")
    show.set_defaults(func=run_show)
    rp = verbs.add_parser("replay", help="publish dead letters back to their original subject")
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("seq", type=int, nargs="?", help="one dead letter")
    group.add_argument("--all", action="store_true", help="every dead letter (of --stage)")
    rp.add_argument("--stage", help="with --all: only this stage's dead letters")
    rp.add_argument("--workspace", help="with --all: " + WORKSPACE_HELP)
    rp.set_defaults(func=run_replay)
    purge = verbs.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("--stage", help="only this stage's dead letters")
    purge.add_argument("--workspace", help=WORKSPACE_HELP)
    purge.add_argument("--yes", action="store_true", help="do not ask")
    purge.set_defaults(func=run_purge)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    if args.each:
        return _ls_each(args, settings)

    async def work(nc: NATS) -> int:
        groups = await letters.grouped(nc, args.stage, args.workspace)
        if args.json:
            print(json.dumps({"total": sum(g.count for g in groups),
                              "groups": [g.as_dict() for g in groups]}, indent=2))
            return 0
        rows = [[g.stage, g.code, g.count, g.first_seq, g.last_seq,
                 g.as_dict()["last_time"][:19], ", ".join(sorted(g.subjects)),
                 g.reason[:60]] for g in groups]
        print(table(["stage", "reason", "count", "first seq", "last seq", "last (UTC)",
                     "subjects", "latest message"], rows))
        print(f"{sum(g.count for g in groups)} dead letters")
        return 0

    return with_nats(settings, "dlq", work)


def _ls_each(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        found = [s async for s in dlq.letters(nc, args.stage, args.limit, args.workspace)]
        if args.json:
            print(json.dumps([{"seq": s.seq, "time": s.time.isoformat(), **s.headers}
                              for s in found], indent=2))
            return 0
        rows = [
            [s.seq, s.time.strftime("%Y-%m-%d %H:%M:%S"), s.headers.get(h.DLQ_STAGE, "?"),
             subjects.last_token(s.subject), s.headers.get(h.DLQ_CODE, "?"),
             s.headers.get(h.DLQ_SUBJECT, "?"), s.headers.get(h.DLQ_REASON, "")[:70]]
            for s in found
        ]
        print(table(["seq", "time (UTC)", "stage", "workspace", "code", "subject", "reason"],
                    rows))
        return 0

    return with_nats(settings, "dlq", work)


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        stored = await dlq.letter(nc, args.seq)
        body = letters.describe_body(stored.data, stored.headers)
        if args.json:
            print(json.dumps({"seq": stored.seq, "subject": stored.subject,
                              "time": stored.time.isoformat(), "headers": stored.headers,
                              "body": body}, indent=2))
            return 0
        print(f"seq: {stored.seq}\nsubject: {stored.subject}")
        for key, value in sorted(stored.headers.items()):
            print(f"{key}: {value}")
        kind = "not kept in the letter" if body["omitted"] else (
            "binary, not shown" if body.get("binary") else "shown below")
        print(f"\nbody: {body['content_type']}, {body['size']} bytes ({kind})")
        if "json" in body:
            print(json.dumps(body["json"], indent=2))
        elif "text" in body:
            print(body["text"])
        return 0

    return with_nats(settings, "dlq", work)


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        if args.all:
            targets = [s async for s in dlq.letters(nc, args.stage, workspace=args.workspace)]
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
        scope += f" of workspace {args.workspace}" if args.workspace else ""
        if input(f"delete all dead letters {scope}? [y/N] ").strip().lower() != "y":
            return 1

    async def work(nc: NATS) -> int:
        print(f"purged {await dlq.purge(nc, args.stage, args.workspace)} dead letters")
        return 0

    return with_nats(settings, "dlq", work)
