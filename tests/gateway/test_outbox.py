"""A socket's outbox against a real aiohttp websocket client over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from mumu.gateway.outbox import HIGH_WATER, Outbox
from mumu.runtime.http import serve

SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 300_000]
AIOHTTP_CHUNK = 1 << 18
"""aiohttp's websocket writer looks at the transport's pause only once this much was
written since it last looked: what a socket may hold past ``HIGH_WATER``."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Work = Callable[[web.WebSocketResponse, Outbox, web.Request], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner, port = await serve(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}/ws"


@contextlib.asynccontextmanager
async def socket_with_outbox(
    limit: int, work: Work, limit_bytes: int = 1 << 30
) -> AsyncIterator[str]:
    """A websocket server whose one socket runs ``work`` with an Outbox and its writer."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        outbox = Outbox(ws, request, limit, limit_bytes)
        writer = asyncio.create_task(outbox.run())
        try:
            await work(ws, outbox, request)
        finally:
            outbox.stop()
            await writer
        return ws

    runner, url = await _serve(handler)
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_frames_of_every_length_class_arrive_whole_and_in_order() -> None:
    payloads = [b"x" * size for size in SIZES]  # distinct lengths: the order shows too

    async def work(ws: web.WebSocketResponse, outbox: Outbox, _: web.Request) -> None:
        for payload in payloads:
            await outbox.put(payload)
        await ws.send_str("end")  # aiohttp's own writer on the same transport
        await ws.receive()

    async with (socket_with_outbox(16, work) as url, aiohttp.ClientSession() as http,
                http.ws_connect(url, max_msg_size=0) as ws):
        got = [(await ws.receive()).data for _ in range(len(payloads) + 1)]
    assert got == [p.decode() for p in payloads] + ["end"]


async def test_a_frame_for_a_client_that_keeps_up_is_written_by_send_itself() -> None:
    """No queue and no task switch on the hot path: ``send`` has written the frame when it
    returns (the writer task has not run in between: nothing is queued)."""
    states: list[tuple[int, int]] = []

    async def work(ws: web.WebSocketResponse, outbox: Outbox, request: web.Request) -> None:
        assert request.transport is not None
        for n in range(3):
            assert await outbox.send(b"live %d" % n)
            states.append((len(outbox), request.transport.get_write_buffer_size()))
        await ws.receive()

    async with (socket_with_outbox(16, work) as url, aiohttp.ClientSession() as http,
                http.ws_connect(url) as ws):
        got = [(await ws.receive()).data for _ in range(3)]
        await ws.send_str("done")
    assert got == ["live 0", "live 1", "live 2"]
    assert states == [(0, 0)] * 3  # not queued, and handed to the kernel at once


async def test_a_client_that_does_not_read_gets_a_bounded_queue_then_everything_in_order(
) -> None:
    chunk = b"y" * 20_000  # written at once until the socket is behind, then queued
    full = asyncio.Event()
    seen: dict[str, int] = {}

    async def work(ws: web.WebSocketResponse, outbox: Outbox, request: web.Request) -> None:
        sent = 0
        while await outbox.send(chunk + str(sent).encode()):  # until the queue is full
            sent += 1
        assert request.transport is not None
        seen.update(sent=sent, queued=len(outbox),
                    buffered=request.transport.get_write_buffer_size())
        full.set()
        await ws.receive()  # the client read everything and says so

    async with (socket_with_outbox(8, work) as url, aiohttp.ClientSession() as http,
                http.ws_connect(url, max_msg_size=0) as ws):
        await asyncio.wait_for(full.wait(), 10)  # nothing read until the queue is full
        got = [(await ws.receive()).data for _ in range(seen["sent"])]
        await ws.send_str("done")
    assert seen["queued"] == 8  # bounded: the next frame was refused
    assert seen["buffered"] < HIGH_WATER + len(chunk) + 16
    assert [int(g[len(chunk):]) for g in got] == list(range(seen["sent"]))


async def test_stop_drops_the_queue() -> None:
    checked = asyncio.Event()

    async def work(ws: web.WebSocketResponse, outbox: Outbox, _: web.Request) -> None:
        while await outbox.send(b"z" * 300_000):  # the client reads nothing: the queue fills
            pass
        outbox.stop()
        assert outbox.stopped and len(outbox) == 0
        assert await outbox.send(b"after") is True  # accepted and dropped: the socket is closing
        checked.set()
        await ws.close()

    async with (socket_with_outbox(2, work) as url, aiohttp.ClientSession() as http,
                http.ws_connect(url, max_msg_size=0) as ws):
        await asyncio.wait_for(checked.wait(), 10)
        async for _ in ws:
            pass


async def test_a_replay_writes_at_the_clients_pace_holding_little() -> None:
    """``put`` (a replay) waits while the client reads nothing: the socket then holds
    at most about ``HIGH_WATER`` plus one frame, and nothing is queued."""
    chunk = b"r" * 20_000
    stalled = asyncio.Event()
    seen: dict[str, int] = {}

    async def work(ws: web.WebSocketResponse, outbox: Outbox, request: web.Request) -> None:
        assert request.transport is not None
        transport = request.transport
        writes = asyncio.create_task(_put_all(outbox, chunk, 2_000))
        await asyncio.sleep(1.0)  # the client reads nothing meanwhile
        seen.update(buffered=transport.get_write_buffer_size(), queued=len(outbox))
        assert not writes.done()  # the replay waits for the client
        stalled.set()
        await writes
        await ws.receive()

    async with (socket_with_outbox(1_000_000, work) as url, aiohttp.ClientSession() as http,
                http.ws_connect(url, max_msg_size=0) as ws):
        await asyncio.wait_for(stalled.wait(), 10)
        got = [(await ws.receive()).data for _ in range(2_000)]
        await ws.send_str("done")
    assert seen["queued"] == 0
    assert seen["buffered"] <= HIGH_WATER + AIOHTTP_CHUNK + len(chunk) + 16
    assert [int(g[len(chunk):]) for g in got] == list(range(2_000))


async def _put_all(outbox: Outbox, chunk: bytes, count: int) -> None:
    for n in range(count):
        await outbox.put(chunk + str(n).encode())


async def test_the_queue_behind_a_congested_socket_is_bounded_in_bytes() -> None:
    refused = asyncio.Event()
    seen: dict[str, int] = {}

    async def work(ws: web.WebSocketResponse, outbox: Outbox, _: web.Request) -> None:
        sent = 0
        while await outbox.send(b"q" * 100_000):  # the frame count limit is far away
            sent += 1
        seen.update(queued=len(outbox))
        refused.set()
        await ws.close()

    async with (socket_with_outbox(1_000_000, work, limit_bytes=500_000) as url,
                aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0)):
        await asyncio.wait_for(refused.wait(), 10)
    assert seen["queued"] == 5  # 500 kB of 100 kB frames, then refused
