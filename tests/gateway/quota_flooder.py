"""Workspace A as an outside tenant, in its own process: floods text asks through NATS
(with A's producer credentials) and through the gateway (with a session token of A).

Run by ``test_quota_flood.py``: ``python -m tests.gateway.quota_flooder URL SEED WS
GATEWAY TOKEN RATE``. It prints ``ready``, then floods while the last line read from
stdin is ``flood`` (``pause`` stops), and on ``quit`` prints what it saw as one JSON
line: the gateway's answers by status or error code, the raw asks sent, and the codes
of the error events of A's raw asks."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter

import aiohttp
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mumu.contracts import headers as h
from mumu.contracts import subjects
from mumu.contracts.events import TextAsk, new_id


class Flooder:
    def __init__(self, ws: str, gateway: str, token: str, rate: float) -> None:
        self.ws, self.gateway, self.token, self.rate = ws, gateway, token, rate
        self.flooding = asyncio.Event()
        self.done = asyncio.Event()
        self.via_gateway: Counter[str] = Counter()
        self.sent: set[str] = set()
        self.errors: dict[str, str] = {}

    async def raw(self, nc: NATS) -> None:
        js = nc.jetstream()
        while not self.done.is_set():
            await self.flooding.wait()
            rid = new_id()
            ask = TextAsk(event_id=rid, request_id=rid, workspace_id=self.ws,
                          session_id="a-raw", text="flood")
            await js.publish(subjects.INGEST_TEXT.for_workspace(self.ws),
                             ask.model_dump_json().encode(), headers={h.MSG_ID: rid})
            self.sent.add(rid)
            await asyncio.sleep(1 / self.rate)

    async def http(self, session: aiohttp.ClientSession) -> None:
        while not self.done.is_set():
            await self.flooding.wait()
            async with session.post(f"{self.gateway}/api/ask", json={"text": "flood"},
                                    headers={"Authorization": f"Bearer {self.token}"}) as resp:
                body = await resp.json()
                self.via_gateway[str(resp.status) if resp.status == 202
                                 else body["error"]["code"]] += 1
            await asyncio.sleep(1 / self.rate)

    def command(self, line: str) -> None:
        if line == "flood":
            self.flooding.set()
        elif line == "pause":
            self.flooding.clear()
        elif line == "quit":
            self.done.set()
            self.flooding.set()  # wake the loops so they end


async def main(url: str, seed: str, ws: str, gateway: str, token: str, rate: float) -> None:
    flooder = Flooder(ws, gateway, token, rate)
    nc = await nats.connect(url, nkeys_seed=seed,
                            inbox_prefix=subjects.producer_inbox_prefix(ws))

    async def on_error(msg: Msg) -> None:
        body = json.loads(msg.data)
        flooder.errors[body["request_id"]] = body["code"]

    await nc.subscribe(subjects.ERROR.for_workspace(ws), cb=on_error)
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(flooder.command, line.strip())
        loop.call_soon_threadsafe(flooder.command, "quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(flooder.raw(nc), flooder.http(session))
    await asyncio.sleep(1.0)  # the refusals of the last raw asks
    await nc.drain()
    raw = Counter(code for rid, code in flooder.errors.items() if rid in flooder.sent)
    print(json.dumps({"gateway": flooder.via_gateway, "nats_sent": len(flooder.sent),
                      "nats_errors": raw}), flush=True)


if __name__ == "__main__":
    url, seed, ws, gateway, token, rate = sys.argv[1:7]
    asyncio.run(main(url, seed, ws, gateway, token, float(rate)))
