"""``mumu replay SUBJECT --from-seq N``: republish a stream range for the stages to redo."""

from __future__ import annotations

import argparse
import sys

from nats.aio.client import Client as NATS

from mumu.bench.stream import STREAM_BENCH
from mumu.broker.streams import load_stream_configs
from mumu.cli.common import with_nats
from mumu.ops.reader import stream_of
from mumu.ops.replay import replay_range
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "replay", help="republish stored messages (e.g. mumu.transcript.final.<ws>) to redo work"
    )
    p.add_argument("subject", help="subject or filter, e.g. 'mumu.ingest.text.*'")
    p.add_argument("--from-seq", type=int, required=True, help="first stream sequence")
    p.add_argument("--to-seq", type=int, default=None, help="last stream sequence (default: end)")
    p.add_argument("--tag", default="1", help="distinguishes this replay's message ids")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    async def work(nc: NATS) -> int:
        # streams/ plus the benchmarks' own MUMU_BENCH (skipped where it does not exist)
        names = [c["name"] for c in load_stream_configs()] + [STREAM_BENCH]
        stream = await stream_of(nc, args.subject, names)

        def progress(done: int, seq: int) -> None:
            print(f"\rreplayed {done} (stream {stream} seq {seq})", end="", file=sys.stderr)

        count = await replay_range(
            nc, stream, args.subject, from_seq=args.from_seq, to_seq=args.to_seq, tag=args.tag,
            progress=progress,
        )
        print(f"\nreplayed {count} messages from {stream}")
        return 0

    return with_nats(settings, "replay", work)
