"""Spans leave every process over OTLP/HTTP (``MUMU_OTLP_ENDPOINT``): a local receiver
started by the test decodes the protobuf requests, as a collector would, and finds one
trace per request from the gateway through reason to persist."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mumu.contracts import headers as h
from mumu.runtime.http import serve
from mumu.settings import Settings
from mumu.stages.persist.stage import build_stage as build_persist
from mumu.stages.reason.stage import build_stage as build_reason
from tests.gateway.conftest import gateway_settings, provision, serving
from tests.gateway.pipeline import pipeline_settings
from tests.harness import Collector, Seen, running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


@dataclass
class Receiver:
    url: str
    spans: list[ReceivedSpan]
    requests: int = 0


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """An OTLP/HTTP trace receiver on loopback (``POST /v1/traces``, protobuf)."""
    received = Receiver("", [])

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        received.requests += 1
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value
                          for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                received.spans.extend(ReceivedSpan(
                    attributes["service.name"], span.name, span.trace_id.hex(),
                    span.span_id.hex(), span.parent_span_id.hex(),
                ) for span in scope.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner, port = await serve(app, "127.0.0.1", 0)
    received.url = f"http://127.0.0.1:{port}/v1/traces"
    try:
        yield received
    finally:
        await runner.cleanup()


def _stored(messages: list[Seen], request_id: str) -> bool:
    return any(m.json().get("request_id") == request_id and m.json().get("kind") == "answer"
               for m in messages)


async def test_spans_reach_an_otlp_http_receiver_as_one_trace_per_request(
    nc: NATS, streams: None, settings: Settings, tmp_path: Path, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    async with otlp_receiver() as receiver:
        cfg = gateway_settings(pipeline_settings(settings, tmp_path / "models"),
                               wait_timeout=120.0)
        cfg = cfg.model_copy(update={
            "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys,
            "otlp_endpoint": receiver.url})
        ws, api_key = await workspace("otlp")
        await provision(cfg, ws)
        async with Collector(nc, "mumu.persisted.>") as persisted:
            async with running(build_reason(cfg), cfg), running(build_persist(cfg), cfg), \
                    serving(cfg) as gw, aiohttp.ClientSession() as http:
                async with http.post(f"{gw.url}/api/session",
                                     headers={"Authorization": f"Bearer {api_key}"}) as resp:
                    token = (await resp.json())["token"]  # its API key is checked
                async with http.post(
                    f"{gw.url}/api/ask?wait=true", json={"text": "Say hello in one word."},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    body = await resp.json()
                assert resp.status == 200, body
                rid = body["request_id"]
                await persisted.wait_for(lambda ms: _stored(ms, rid), 60)
            # every process flushed its spans on the way out
        traceparent = next(m.headers[h.TRACEPARENT] for m in persisted.messages
                           if m.json().get("request_id") == rid)
    trace_id = traceparent.split("-")[1]
    mine = [s for s in receiver.spans if s.trace_id == trace_id]
    assert receiver.requests >= 1
    by_id = {s.span_id: s for s in mine}
    (root,) = [s for s in mine if not s.parent_id]
    assert (root.service, root.name) == ("mumu-gateway", "gateway ask text")
    edges = {(by_id[s.parent_id].service if s.parent_id in by_id else "<missing>", s.service)
             for s in mine if s.parent_id}
    assert edges == {("mumu-gateway", "mumu-reason"), ("mumu-reason", "mumu-persist")}, edges
