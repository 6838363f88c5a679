"""``mumu gateway``: run the HTTP/websocket gateway (``--openapi``: print its OpenAPI document)."""

from __future__ import annotations

import argparse
import asyncio

from mumu.gateway.app import create_app
from mumu.gateway.openapi import openapi_text
from mumu.gateway.transport import base_url, ssl_context
from mumu.runtime.http import serve
from mumu.runtime.process import install_signal_handlers
from mumu.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gateway", help="run the HTTP and websocket gateway")
    p.add_argument(
        "--openapi", action="store_true",
        help="print the OpenAPI document (schemas/openapi.json) and exit",
    )
    p.set_defaults(func=run)


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    gw = settings.gateway
    runner, port = await serve(create_app(settings), gw.host, gw.port, ssl_context(gw))
    print(f"gateway: {base_url(gw, gw.host, port)}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.openapi:
        print(openapi_text(), end="")
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_gateway(settings, stop)

    asyncio.run(main())
    return 0
