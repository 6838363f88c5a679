"""``mumu replay``: select stored messages, then count, export, or publish them again.

    mumu replay mumu.transcript.final.* --workspace WS --since -15m --dry-run
    mumu replay MUMU_RESULTS --request-id RID --to-file out.jsonl
    mumu replay mumu.transcript.final.* --from-seq 120 --to-stage persist --rate 500
    mumu replay --from-file out.jsonl            # back on their subjects (any deployment)
    mumu replay --resume                         # after Ctrl-C, from the checkpoint
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from mumu.bench.stream import STREAM_BENCH
from mumu.broker.streams import load_stream_configs
from mumu.cli.common import table, with_nats
from mumu.ops import replay
from mumu.ops.plan import Action, Plan
from mumu.ops.progress import Progress
from mumu.ops.selection import Selection
from mumu.settings import Settings
from mumu.stages.registry import STAGES

RELATIVE_TIME = re.compile(r"^-\d+(\.\d+)?(ms|s|m|h|d|w)?$")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replay", help="count, export or republish stored messages (one stage or all)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="?",
                   help="a stream (MUMU_RESULTS) or subject filter ('mumu.transcript.final.*')")
    sel = p.add_argument_group("selection")
    sel.add_argument("--workspace", help="only this workspace's messages")
    sel.add_argument("--request-id", help="only this request's messages")
    sel.add_argument("--since", help="stored at or after (RFC 3339, or relative: -15m, -2h)")
    sel.add_argument("--until", help="stored at or before (RFC 3339, or relative)")
    sel.add_argument("--from-seq", type=int, help="first stream sequence")
    sel.add_argument("--to-seq", type=int, help="last stream sequence")
    act = p.add_argument_group("action (one of)")
    act.add_argument("--dry-run", action="store_true",
                     help="count per subject, first/last sequence and time, a sample")
    act.add_argument("--to-file", type=Path, help="export as JSON lines (data in base64)")
    act.add_argument("--from-file", type=Path,
                     help="publish an export back (to its subjects, or with --to-stage)")
    act.add_argument("--to-stage", choices=STAGES.names(),
                     help="only this stage handles the messages again")
    act.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    run_ = p.add_argument_group("running")
    run_.add_argument("--rate", type=float, help="publish at most this many messages a second")
    run_.add_argument("--sample", type=int, default=3, help="--dry-run: messages shown")
    run_.add_argument("--checkpoint", type=Path,
                      help="where Ctrl-C writes the checkpoint (default: <data_dir>/replay.json)")
    run_.add_argument("--json", action="store_true", help="print a machine-readable summary")
    # "-15m" is a value, not an option (argparse otherwise only lets "-15" through)
    p._negative_number_matcher = RELATIVE_TIME
    p.set_defaults(func=run)


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan the arguments ask for (``ValueError`` for a wrong combination)."""
    modes = [m for m in ("dry_run", "to_file", "from_file") if getattr(args, m)]
    if len(modes) > 1:
        raise ValueError("give one of --dry-run, --to-file, --from-file")
    if args.to_stage and (args.dry_run or args.to_file):
        raise ValueError("--to-stage publishes: not with --dry-run or --to-file")
    action: Action
    if args.dry_run:
        action = "dry-run"
    elif args.to_file:
        action = "to-file"
    elif args.to_stage:
        action = "to-stage"
    elif args.from_file:
        action = "republish"
    else:
        raise ValueError("say what to do: --dry-run, --to-file, --to-stage or --from-file")
    if not args.target and not args.from_file:
        raise ValueError("name a stream or a subject filter")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be positive")
    selection = Selection.of(
        args.target or ">", workspace=args.workspace, request_id=args.request_id,
        since=args.since, until=args.until, from_seq=args.from_seq, to_seq=args.to_seq,
    )
    return Plan(selection, action, stage=args.to_stage,
                out_file=str(args.to_file) if args.to_file else None,
                from_file=str(args.from_file) if args.from_file else None,
                rate=args.rate, sample=args.sample)


@contextlib.contextmanager
def _interruptible(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C (and SIGTERM) ask the replay to stop after the message in hand."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace, settings: Settings) -> int:
    checkpoint: Path = args.checkpoint or settings.data_dir / "replay.json"
    try:
        plan = Plan.load(checkpoint) if args.resume else plan_of(args)
    except ValueError as exc:
        print(f"mumu replay: {exc}", file=sys.stderr)
        return 2
    # the streams of streams/, plus the benchmarks' own MUMU_BENCH where it exists
    candidates = [c["name"] for c in load_stream_configs()] + [STREAM_BENCH]

    async def work(nc: NATS) -> int:
        stop = asyncio.Event()
        progress = Progress(sys.stderr)
        try:
            with _interruptible(stop):
                async with progress.shown():
                    outcome = await replay.run(nc, plan, candidates=candidates, stop=stop,
                                               on_read=progress.on_read)
        except Exception:
            if plan.action != "dry-run":
                await asyncio.to_thread(plan.save, checkpoint)
                print(f"mumu replay: stopped by an error; checkpoint in {checkpoint} "
                      "(`mumu replay --resume` continues)", file=sys.stderr)
            raise
        if outcome.interrupted and plan.action != "dry-run":
            await asyncio.to_thread(plan.save, checkpoint)
        elif args.resume:
            await asyncio.to_thread(checkpoint.unlink, True)
        _report(outcome.summary(), args.json, checkpoint if outcome.interrupted else None)
        return 130 if outcome.interrupted else 0

    return with_nats(settings, "replay", work)


def _report(summary: dict[str, Any], as_json: bool, checkpoint: Path | None) -> None:
    if checkpoint is not None:
        summary["checkpoint"] = str(checkpoint)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    if summary["action"] == "dry-run":
        rows = [[s, d["count"], d["first_seq"], d["first_time"], d["last_seq"], d["last_time"]]
                for s, d in summary["subjects"].items()]
        print(table(["subject", "count", "first seq", "first time", "last seq", "last time"],
                    rows))
        for sample in summary["sample"]:
            print(f"\n#{sample['seq']} {sample['time']} {sample['subject']}")
            for key, value in sorted(sample["headers"].items()):
                print(f"  {key}: {value}")
            print(f"  {sample['data']}")
    verb = {"dry-run": "selected", "to-file": "exported", "to-stage": "replayed",
            "republish": "republished"}[summary["action"]]
    where = f" to stage {summary['stage']}" if summary["stage"] else ""
    print(f"{verb} {summary['selected']} of {summary['read']} messages read{where} in "
          f"{summary['seconds']:.1f}s")
    if summary.get("not_stage_inputs"):
        print(f"skipped (not inputs of {summary['stage']}): {summary['not_stage_inputs']}")
    if checkpoint is not None:
        print(f"interrupted: checkpoint in {checkpoint}; `mumu replay --resume` continues")
