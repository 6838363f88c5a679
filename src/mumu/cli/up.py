"""``mumu up``: NATS, PostgreSQL, every stage and the gateway, on this machine."""

from __future__ import annotations

import argparse
import asyncio

from mumu.runtime.process import install_signal_handlers
from mumu.settings import Settings
from mumu.up.launch import up


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up", help="run everything locally (embedded NATS and PostgreSQL unless configured)"
    )
    p.add_argument(
        "--cluster", type=int, metavar="N", default=None,
        help="start N embedded nats-server nodes as a JetStream cluster on loopback, "
        "streams at RN (MUMU_NATS__EMBEDDED_CLUSTER; 3 is the smallest with a quorum "
        "that survives a node)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.cluster is not None:
        if not 1 <= args.cluster <= 5:
            raise SystemExit("mumu up: --cluster takes 1 to 5 nodes")
        settings.nats.embedded_cluster = args.cluster
    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await up(settings, stop, lambda line: print(line, flush=True))

    asyncio.run(main())
    return 0
