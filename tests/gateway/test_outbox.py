"""A socket's outbox against a real aiohttp websocket client over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from mumu.gateway.outbox import HIGH_WATER, Outbox, text_frame

SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 300_000]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/ws"


def test_frame_headers_follow_rfc_6455() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 65_536)[:10] == b"\x81\x7f" + (65_536).to_bytes(8, "big")


async def test_frames_of_every_length_class_arrive_whole_and_in_order() -> None:
    payloads = [b"x" * size for size in SIZES]  # distinct lengths: the order shows too

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        outbox = Outbox(request.transport, 16)
        writer = asyncio.create_task(outbox.run())
        for payload in payloads:
            await outbox.put(payload)
        await ws.send_str("end")  # aiohttp's own writer on the same transport
        await ws.receive()
        outbox.stop()
        await writer
        return ws

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            got = [(await ws.receive()).data for _ in range(len(payloads) + 1)]
    finally:
        await runner.cleanup()
    assert got == [p.decode() for p in payloads] + ["end"]


async def test_a_client_that_does_not_read_gets_a_bounded_queue_then_everything_in_order(
) -> None:
    chunk = b"y" * 200_000
    full = asyncio.Event()
    seen: dict[str, int] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        outbox = Outbox(request.transport, 8)
        writer = asyncio.create_task(outbox.run())
        sent = 0
        while outbox.send(chunk + str(sent).encode()):  # until the queue is full
            sent += 1
        assert request.transport is not None
        seen.update(sent=sent, queued=len(outbox),
                    buffered=request.transport.get_write_buffer_size())
        full.set()
        await ws.receive()  # the client read everything and says so
        outbox.stop()
        await writer
        return ws

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            await asyncio.wait_for(full.wait(), 10)  # nothing read until the queue is full
            got = [(await ws.receive()).data for _ in range(seen["sent"])]
            await ws.send_str("done")
    finally:
        await runner.cleanup()
    assert seen["queued"] == 8  # bounded: the next frame was refused
    assert seen["buffered"] < HIGH_WATER + len(chunk) + 16
    assert [int(g[len(chunk):]) for g in got] == list(range(seen["sent"]))


async def test_stop_drops_the_queue_and_marks_a_slow_client() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        outbox = Outbox(request.transport, 2)
        writer = asyncio.create_task(outbox.run())
        while outbox.send(b"z" * 300_000):
            pass
        outbox.stop(too_slow=True)
        await asyncio.wait_for(writer, 5)  # the writer ends at once
        assert outbox.too_slow and len(outbox) == 0
        assert outbox.send(b"after") is True  # accepted and dropped: the socket is closing
        await ws.close()
        return ws

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            async for _ in ws:
                pass
    finally:
        await runner.cleanup()
