"""Gateway shutdown: every socket gets 1001 and no data frame follows its Close frame."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from urllib.parse import urlsplit

import aiohttp
from nats.aio.client import Client as NATS

from mumu.settings import Settings
from tests.gateway.conftest import WS_A, Results, receive_until, rid, serving

OP_TEXT, OP_CLOSE = 0x1, 0x8


async def test_shutdown_closes_sockets_with_going_away(
    nc: NATS, streams: None, gw_settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with serving(gw_settings) as gw:
        ws = await http.ws_connect(gw.ws_url(gw.token(WS_A, "bye")))
        await receive_until(ws, lambda m: m["type"] == "ready")
        closing = asyncio.create_task(ws.receive(timeout=10))  # a client keeps reading
    msg = await closing
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    await ws.close()


class RawSocket:
    """A websocket client on a bare TCP stream: it sees every frame, in wire order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> RawSocket:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(n)

    def send_close(self) -> None:
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
        self.writer.write(bytes((0x88, 0x80 | len(payload))) + mask + payload)


async def test_no_data_frame_follows_the_close_frame_on_shutdown(
    nc: NATS, streams: None, gw_settings: Settings, results: Results
) -> None:
    frames: list[tuple[int, bytes]] = []
    stop = asyncio.Event()

    async def publish() -> None:  # a stage streaming an answer all through the shutdown
        r = rid()
        for start in range(0, 1_000_000, 50):  # bursts: the feed dispatches many per turn
            if stop.is_set():
                return
            await asyncio.gather(*(results.delta(WS_A, "busy", r, n, "word ")
                                   for n in range(start, start + 50)))

    async with serving(gw_settings) as gw:
        sock = await RawSocket.connect(gw.ws_url(gw.token(WS_A, "busy")))
        publisher = asyncio.create_task(publish())
        while len([f for f in frames if b"answer.delta" in f[1]]) < 5:
            frames.append(await sock.frame())

        async def read_to_the_end() -> None:
            while True:
                op, data = await sock.frame()
                frames.append((op, data))
                if op == OP_CLOSE:
                    await asyncio.sleep(0.3)  # the stream goes on; the gateway must not
                    sock.send_close()

        reading = asyncio.create_task(read_to_the_end())
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        await asyncio.wait_for(reading, 10)
    stop.set()
    await publisher
    sock.writer.close()
    ops = [op for op, _ in frames]
    assert OP_CLOSE in ops
    after_close = frames[ops.index(OP_CLOSE):]
    assert [op for op, _ in after_close] == [OP_CLOSE], [
        json.loads(d).get("type") for op, d in after_close if op == OP_TEXT]
    assert struct.unpack("!H", after_close[0][1][:2])[0] == 1001
