"""A fault injector in front of the real llama.cpp server (not a fake of the model).

It answers the first requests with the given statuses (with ``Retry-After`` when
given) and forwards the rest unchanged to the real server, noting when each
request arrived. With ``stall_after`` set, it forwards that many lines of the
real stream and then only sends SSE keep-alive pings (a stalled server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from mumu.runtime.http import serve


class FaultProxy:
    def __init__(self, upstream: str, faults: list[tuple[int, str | None]]) -> None:
        self.upstream = upstream
        self.faults = list(faults)
        self.seen: list[float] = []
        self.stall_after: int | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(time.perf_counter())
        if self.faults:
            status, retry_after = self.faults.pop(0)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response({"error": "busy"}, status=status, headers=headers)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.upstream}/chat/completions",
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as up,
        ):
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await resp.prepare(request)
            if self.stall_after is not None:
                await self._stall(up, resp, self.stall_after)
                return resp
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    @staticmethod
    async def _stall(up: aiohttp.ClientResponse, resp: web.StreamResponse, lines: int) -> None:
        for _ in range(lines):
            await resp.write(await up.content.readline())
        with contextlib.suppress(ConnectionError):
            for _ in range(300):  # until the client gives up (30 s at most)
                await resp.write(b": ping\n\n")
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(proxy: FaultProxy) -> AsyncIterator[str]:
    """Serve ``proxy`` on a free port; yields its base URL (``.../v1``)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy.handle)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
