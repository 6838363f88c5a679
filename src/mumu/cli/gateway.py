"""``mumu gateway``: run the HTTP/websocket gateway."""

from __future__ import annotations

import argparse
import asyncio

from mumu.gateway.app import create_app
from mumu.runtime.http import serve
from mumu.runtime.process import install_signal_handlers
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gateway", help="run the HTTP and websocket gateway")
    p.set_defaults(func=run)


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    runner, port = await serve(create_app(settings), settings.gateway.host, settings.gateway.port)
    print(f"gateway: http://{settings.gateway.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace, settings: Settings) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_gateway(settings, stop)

    asyncio.run(main())
    return 0
