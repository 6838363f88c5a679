"""The baseline of ``mumu bench gateway``: a bare aiohttp websocket echo server (run as
``python -m mumu.bench.gateway_echo``) and the clients timing its round trips."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

import aiohttp
from aiohttp import web

from mumu.bench.gateway_load import Clients, Side, rss_kib
from mumu.runtime.http import serve


async def echo_side(http: aiohttp.ClientSession, pid: int, url: str, args: argparse.Namespace,
                    padding: str) -> Side:
    n = args.sessions
    before = rss_kib(pid)

    async def nothing(_: aiohttp.ClientWebSocketResponse) -> None:
        return None

    clients = Clients(lambda m: float(m["t"]))
    await clients.open(http, [url.replace("http://", "ws://") + "/ws"] * n, nothing)
    await asyncio.sleep(1.0)
    per_conn = (rss_kib(pid) - before) / n

    async def send(k: int) -> None:
        await clients.sockets[k % n].send_str(json.dumps({"t": time.time(), "p": padding}))

    async def flush() -> None:
        await asyncio.sleep(0)

    return Side(clients, send, flush, before, per_conn)


async def echo_server() -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    runner, port = await serve(app, "127.0.0.1", 0)
    print(f"echo: http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(echo_server())
