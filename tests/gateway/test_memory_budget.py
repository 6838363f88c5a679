"""The gateway's memory budget (docs/gateway.md, "Memory budget"), measured on a real
``mumu gateway`` process: 200 slow sockets resuming from ``after=0`` over a large
history hold bounded memory, and other clients are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from mumu.broker.embedded import EmbeddedNats
from mumu.contracts import subjects
from mumu.contracts.event_types import EventType
from mumu.gateway.feed import result_filters
from mumu.gateway.tokens import TokenSigner
from mumu.settings import Settings
from tests.conftest import nats_env
from tests.gateway.conftest import SECRET, WS_A, WS_B, Results, provision, receive_until, rid
from tests.gateway.test_http import wav
from tests.harness import Collector

SLOW_SOCKETS = 200
HISTORY_EVENTS = 4_000
PADDING = 2_400  # bytes of text per event: about 10 MB of history in WS_A
BASE_MIB = 160.0
"""docs/gateway.md: the budget's base (the gateway process with its feed, no sockets)."""
PER_REPLAYING_SOCKET_KIB = 768.0
"""docs/gateway.md: what one socket replaying to a client that does not keep up may hold."""
PER_IDLE_SOCKET_KIB = 64.0
"""docs/gateway.md: what one open, authenticated, idle socket holds."""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


@dataclass
class GatewayProcess:
    url: str
    pid: int
    peak: float = 0.0
    samples: list[float] = field(default_factory=list)

    def ws_url(self, token: str, after: int | None = None) -> str:
        tail = "" if after is None else f"&after={after}"
        return f"ws{self.url.removeprefix('http')}/api/ws?token={token}{tail}"

    def sample(self) -> float:
        now = rss_mib(self.pid)
        self.samples.append(now)
        self.peak = max(self.peak, now)
        return now


@contextlib.asynccontextmanager
async def gateway_process(server: EmbeddedNats, **env: str) -> AsyncIterator[GatewayProcess]:
    """``mumu gateway`` as a child process (its memory is its own to measure)."""
    full = {**os.environ, **nats_env(server), "MUMU_GATEWAY__SESSION_SECRET": SECRET,
            "MUMU_GATEWAY__PORT": "0", "MUMU_LOG_LEVEL": "WARNING", **env}
    full.pop("MUMU_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mumu", "gateway", env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("gateway: "), line
        yield GatewayProcess(line.split(" ", 1)[1].strip(), proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with an 8 KiB receive buffer: a slow reader's kernel holds little,
    so what it has not read piles up on the gateway's side (what is measured)."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    return sock


async def publish_history(results: Results, session: str, request_id: str) -> list[int]:
    padding = "h" * PADDING
    cursors: list[int] = []
    for start in range(0, HISTORY_EVENTS, 250):
        cursors += await asyncio.gather(*(
            results.delta(WS_A, session, request_id, n, f"{n},{padding}")
            for n in range(start, min(start + 250, HISTORY_EVENTS))))
    return cursors


async def replays(nc: NATS) -> tuple[int, int]:
    """The replay consumers of WS_A on MUMU_RESULTS, and the messages they delivered."""
    infos = await nc.jetstream().consumers_info(subjects.STREAM_RESULTS)
    mine = set(result_filters(WS_A))
    delivered = [i.delivered.consumer_seq or 0 for i in infos
                 if set(i.config.filter_subjects or ()) == mine]
    return len(delivered), sum(delivered)


async def watch_rss(gw: GatewayProcess, budget: float, over: asyncio.Event) -> None:
    while True:
        if gw.sample() > budget:
            over.set()
            return
        await asyncio.sleep(0.2)


async def test_200_slow_sockets_resuming_from_0_stay_within_the_budget_and_others_are_served(
    nc: NATS, streams: None, settings: Settings, nats_server: EmbeddedNats, results: Results
) -> None:
    await provision(settings, WS_A, WS_B)
    history = await publish_history(results, "hist", rid())
    signer = TokenSigner(SecretStr(SECRET), 3600.0)
    async with gateway_process(
            nats_server, MUMU_GATEWAY__HEARTBEAT="600",
            MUMU_GATEWAY__RATE_LIMIT_BURST="1000") as gw, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=0, socket_factory=small_receive_buffer)) as slow_http, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # the base: the gateway with one socket served (every module loaded)
        async with http.ws_connect(gw.ws_url(signer.issue(WS_B, "warm")[0])) as warm:
            await receive_until(warm, lambda m: m["type"] == "ready")
        await asyncio.sleep(0.5)
        base = gw.sample()
        # idle sockets: open, authenticated, nothing to send
        idle = await asyncio.gather(*(
            http.ws_connect(gw.ws_url(signer.issue(WS_B, f"idle{n}")[0]))
            for n in range(SLOW_SOCKETS)))
        for ws in idle:
            await receive_until(ws, lambda m: m["type"] == "ready")
        await asyncio.sleep(0.5)
        idle_each = (gw.sample() - base) * 1024 / SLOW_SOCKETS
        await asyncio.gather(*(ws.close() for ws in idle))
        assert idle_each <= PER_IDLE_SOCKET_KIB, f"an idle socket holds {idle_each:.0f} KiB"
        budget = BASE_MIB + SLOW_SOCKETS * PER_REPLAYING_SOCKET_KIB / 1024
        over = asyncio.Event()
        watcher = asyncio.create_task(watch_rss(gw, budget, over))
        token = signer.issue(WS_A, "hist")[0]
        slow = await asyncio.gather(*(
            slow_http.ws_connect(gw.ws_url(token, after=0), max_msg_size=0)
            for _ in range(SLOW_SOCKETS)))
        try:
            # the slow clients read nothing: wait until every replay has gone as far as
            # its socket lets it (what JetStream delivered to the gateway stops growing)
            steady, last = 0, -1
            async with asyncio.timeout(120):
                while steady < 3 and not over.is_set():
                    await asyncio.sleep(1.0)
                    consumers, now = await replays(nc)
                    steady, last = (steady + 1, now) if now == last else (0, now)

            assert not over.is_set(), (
                f"gateway RSS {gw.peak:.0f} MiB over the budget {budget:.0f} MiB "
                f"(base {base:.0f} MiB)")
            delivered_while_stalled = last
            assert consumers == SLOW_SOCKETS, "a slow socket's replay was dropped"

            # another client is served meanwhile: an ask goes out, its answer streams back
            async with Collector(nc, "mumu.ingest.text.>") as seen, http.ws_connect(
                    gw.ws_url(signer.issue(WS_B, "other")[0])) as other:
                await receive_until(other, lambda m: m["type"] == "ready", timeout=10)
                started = time.monotonic()
                await other.send_json({"type": "ask", "text": "still there?"})
                accepted = (await receive_until(
                    other, lambda m: m["type"] == "accepted", timeout=10))[-1]
                await seen.wait_count("mumu.ingest.text.", 1)
                final = await results.final(WS_B, "other", accepted["request_id"], "yes")
                got = (await receive_until(
                    other, lambda m: m["type"] == EventType.ANSWER_FINAL, timeout=10))[-1]
                answered = time.monotonic() - started
            assert got["cursor"] == final and answered < 5.0
            # and a fast reader resuming the same history gets all of it, in order
            async with http.ws_connect(gw.ws_url(signer.issue(WS_A, "hist")[0], after=0),
                                       max_msg_size=0) as fast:
                replayed = await receive_until(fast, lambda m: m["type"] == "ready", timeout=60)
            assert [m["cursor"] for m in replayed
                    if m["type"] == EventType.ANSWER_DELTA] == history
            assert not over.is_set(), f"gateway RSS {gw.peak:.0f} MiB over {budget:.0f} MiB"

            # a slow client that starts reading gets its whole replay, nothing lost
            first = slow[0]
            got_slow = await receive_until(first, lambda m: m["type"] == "ready", timeout=120)
            assert [m["cursor"] for m in got_slow
                    if m["type"] == EventType.ANSWER_DELTA] == history
            assert all(not ws.closed for ws in slow[1:])
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            # dropped, not closed: a close handshake would first read each stalled
            # socket's whole replay (40 s for the 200)
            await slow_http.close()
    print(f"\nidle sockets: {idle_each:.0f} KiB each; base {base:.1f} MiB, peak {gw.peak:.1f} MiB with {SLOW_SOCKETS} stalled "
          f"replays ({(gw.peak - base) * 1024 / SLOW_SOCKETS:.0f} KiB each); "
          f"{delivered_while_stalled} messages read by their consumers; budget {budget:.0f} MiB")
    assert gw.peak <= budget
    # the replays wait on their sockets: none read its history to the end (the kernel's
    # socket buffers, up to 4 MiB each here, hold most of what they did read)
    assert delivered_while_stalled < SLOW_SOCKETS * HISTORY_EVENTS


async def test_waiting_audio_asks_hold_at_most_twice_their_body_each(
    nc: NATS, streams: None, settings: Settings, nats_server: EmbeddedNats
) -> None:
    """docs/gateway.md: a waiting request holds at most 2 x its body (the body as read,
    the audio parsed from it) until it is answered."""
    await provision(settings, WS_A, WS_B)
    body = wav(160.0)  # 5.1 MB
    signer = TokenSigner(SecretStr(SECRET), 3600.0)
    waiting = 8
    async with gateway_process(nats_server, MUMU_GATEWAY__WAIT_TIMEOUT="60") as gw, \
            aiohttp.ClientSession() as http, Collector(nc, "mumu.ingest.audio.>") as seen:
        token = signer.issue(WS_A, "w")[0]

        async def ask() -> int:
            form = aiohttp.FormData()
            form.add_field("audio", body, filename="a.wav", content_type="audio/wav")
            async with http.post(f"{gw.url}/api/ask?wait=true", data=form,
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status

        await asyncio.sleep(0.5)
        base = gw.sample()
        asks = [asyncio.create_task(ask()) for _ in range(waiting)]
        try:
            await seen.wait_count("mumu.ingest.audio.", waiting, timeout=60)
            await asyncio.sleep(0.5)
            held = gw.sample() - base
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
    each = held * 1024 * 1024 / waiting / len(body)
    print(f"\n{waiting} waiting asks of {len(body) / 1e6:.1f} MB: {held:.1f} MiB, "
          f"{each:.2f} x the body each")
    assert each <= 2.0
