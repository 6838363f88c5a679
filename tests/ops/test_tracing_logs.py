"""Every JSON log line written while a message or an ask is handled carries its trace id and
workspace (and stream, sequence, deliveries), without each log call naming them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from mumu.bench.stream import BENCH_HOPS, STREAM_BENCH
from mumu.contracts import headers as h
from mumu.contracts.events import new_id
from mumu.gateway.asks import Asker
from mumu.logs import JsonFormatter, MessageLog, log_context, reset_context, set_context
from mumu.runtime import Inbound, Outbound, Route, StageContext
from mumu.settings import Settings
from tests.gateway.conftest import WS_A, gateway_settings, receive_until, serving
from tests.harness import Collector, running
from tests.passthrough import PassThrough, Ping

WS = "ws-logs"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
handler_log = logging.getLogger("mumu.test.handler")


class Quiet(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextlib.contextmanager
def captured() -> Iterator[Quiet]:
    handler = Quiet()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class Logs:
    """A test stage whose handler logs one line naming nothing but its message."""

    name = "passthrough"

    def routes(self) -> Sequence[Route]:
        return [Route(STREAM_BENCH, (BENCH_HOPS[1].wildcard,), self.handle, model=Ping)]

    async def handle(self, inbound: Inbound[Ping]) -> list[Outbound]:
        handler_log.info("handled %s", inbound.body().event_id)
        return []

    async def start(self, ctx: StageContext) -> None:
        pass

    async def stop(self) -> None:
        pass


def _ping(behaviour: str = "ok") -> Ping:
    rid = new_id()
    return Ping(event_id=rid, request_id=rid, workspace_id=WS, session_id="s",
                behaviour=behaviour)  # type: ignore[arg-type]


async def test_a_handlers_log_line_carries_trace_workspace_stream_and_delivery(
    nc: NATS, streams: None, settings: Settings
) -> None:
    ping = _ping()
    with captured() as logs:
        async with running(Logs(), settings):
            ack = await nc.jetstream().publish(
                BENCH_HOPS[1].for_workspace(WS), ping.model_dump_json().encode(),
                headers={h.TRACEPARENT: TRACEPARENT})
            async with asyncio.timeout(10):  # until the handler ran
                while not any(line["msg"] == f"handled {ping.event_id}" for line in logs.lines):
                    await asyncio.sleep(0.02)
    (line,) = [line for line in logs.lines if line["msg"] == f"handled {ping.event_id}"]
    assert line["trace_id"] == TRACEPARENT.split("-")[1]
    assert line["workspace_id"] == WS
    assert line["stream"] == STREAM_BENCH
    assert line["seq"] == ack.seq
    assert line["deliveries"] == 1
    assert line["stage"] == "passthrough"
    assert line["subject"] == BENCH_HOPS[1].for_workspace(WS)


async def test_a_batch_routes_dead_letter_line_names_its_own_workspace_and_trace(
    nc: NATS, streams: None, settings: Settings
) -> None:
    ping = _ping("permanent")
    with captured() as logs:
        async with running(PassThrough(batched=True), settings), Collector(nc) as seen:
            await nc.jetstream().publish(
                BENCH_HOPS[1].for_workspace(WS), ping.model_dump_json().encode(),
                headers={h.TRACEPARENT: TRACEPARENT})
            await seen.wait_count("mumu.dlq.", 1)
    (line,) = [line for line in logs.lines if line["msg"].startswith("dead-lettered")]
    assert (line["workspace_id"], line["trace_id"], line["stream"], line["deliveries"]) == (
        WS, TRACEPARENT.split("-")[1], STREAM_BENCH, 1)
    assert line["request_id"] == ping.request_id


def test_extra_fields_are_kept_and_win_over_the_context() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("mumu.x", logging.INFO, __file__, 1, "m", None, None)
    record.deliveries = 3  # the runtime's field (dropped by the formatter before)
    record.stage = "reason"
    delivery = SimpleNamespace(
        msg=SimpleNamespace(subject="mumu.answer.final.ws-1", headers=None), sequence=7,
        deliveries=1, span=SimpleNamespace(headers={h.TRACEPARENT: TRACEPARENT}))
    token = set_context(MessageLog("persist", "MUMU_RESULTS"), delivery)
    try:
        entry = json.loads(formatter.format(record))
    finally:
        reset_context(token)
    assert entry["deliveries"] == 3 and entry["stage"] == "reason"
    assert entry["workspace_id"] == "ws-1" and entry["stream"] == "MUMU_RESULTS"
    assert entry["trace_id"] == TRACEPARENT.split("-")[1] and entry["seq"] == 7
    assert "trace_id" not in json.loads(formatter.format(record))  # outside the context
    record.client = "192.0.2.7"  # any other `extra` field is kept (the gateway's "client")
    assert json.loads(formatter.format(record))["client"] == "192.0.2.7"


async def test_the_gateways_ask_line_carries_its_trace_and_workspace(
    nc: NATS, streams: None, workspaces: Any
) -> None:
    await workspaces(WS)
    asker = Asker(nc)
    async with Collector(nc, "mumu.ingest.text.>") as published:
        with captured() as logs, log_context(stage="gateway"):
            asked = await asker.ask_text(WS, "s", "hello")
        (msg,) = await published.wait_count("mumu.ingest.text.", 1)
    (line,) = [line for line in logs.lines if line["msg"] == "text ask"]
    assert line["workspace_id"] == WS and line["request_id"] == asked.request_id
    assert line["trace_id"] == msg.headers[h.TRACEPARENT].split("-")[1]


async def test_a_websockets_log_lines_carry_its_workspace(
    nc: NATS, streams: None, settings: Settings
) -> None:
    cfg = gateway_settings(settings, max_frame_bytes=1024)
    with captured() as logs:
        async with serving(cfg) as gw, aiohttp.ClientSession() as http, \
                http.ws_connect(gw.ws_url(gw.token(WS_A, "logs"))) as ws:
            await receive_until(ws, lambda m: m["type"] == "ready")
            await ws.send_str("x" * 4096)  # over the frame limit: the socket logs an error
            async with asyncio.timeout(10):
                while not any(line["msg"].startswith("websocket error") for line in logs.lines):
                    await asyncio.sleep(0.02)
    (line,) = [line for line in logs.lines if line["msg"].startswith("websocket error")]
    assert line["workspace_id"] == WS_A
