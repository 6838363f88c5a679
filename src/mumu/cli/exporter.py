"""``mumu exporter``: stream fullness and every consumer's backlog for Prometheus (one per
deployment; ``mumu up`` starts it)."""

from __future__ import annotations

import argparse
import asyncio

from mumu.ops.exporter import run_exporter
from mumu.runtime.process import install_signal_handlers
from mumu.settings import Settings

DEFAULT_PORT = 9464
"""The exporter's default port (``/metrics``, ``/health``, ``/ready``)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "exporter",
        help="export every stream's fullness and every consumer's backlog (Prometheus)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds between readings of the JetStream API")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_exporter(settings, args.host, args.port, args.interval, stop)

    asyncio.run(main())
    return 0
