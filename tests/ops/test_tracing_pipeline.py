"""One trace per request, started by the gateway, across the real pipeline: gateway ->
ingest -> transcribe -> reason -> persist, each span the child of the hop before it.
The spans go to an in-memory exporter here; test_tracing_otlp.py sends them over OTLP/HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from mumu.contracts import headers as h
from mumu.runtime.tracing import Tracing
from mumu.settings import Settings
from mumu.stages.ingest.stage import build_stage as build_ingest
from mumu.stages.persist.stage import build_stage as build_persist
from mumu.stages.reason.stage import build_stage as build_reason
from mumu.stages.transcribe.stage import build_stage as build_transcribe
from tests.gateway.conftest import gateway_settings, provision, serving
from tests.gateway.pipeline import SPEECH, pipeline_settings
from tests.harness import Collector, Seen, running
from tests.pg_fixtures import WorkspaceFactory

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


class SharedExporter(InMemorySpanExporter):
    """One in-memory exporter for every process's provider: the first provider to shut
    down must not stop it for the others."""

    def shutdown(self) -> None:
        pass


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracing-models")


@contextlib.asynccontextmanager
async def all_stages(cfg: Settings, exported: InMemorySpanExporter) -> AsyncIterator[None]:
    """The four real stages in this event loop, each with its own tracer provider (as
    separate processes have) writing to ``exported``."""
    async with contextlib.AsyncExitStack() as stack:
        for build in (build_ingest, build_transcribe, build_reason, build_persist):
            stage = build(cfg)
            await stack.enter_async_context(running(
                stage, cfg, tracing=Tracing(stage.name, None, exporter=exported)))
        yield


def e2e(exposition: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(kind, milestone) -> (count, sum) of mumu_e2e_latency_seconds."""
    found: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.startswith("mumu_e2e_latency_seconds_") and \
                    sample.name.endswith(("_count", "_sum")):
                key = (sample.labels["kind"], sample.labels["milestone"])
                index = 0 if sample.name.endswith("_count") else 1
                found.setdefault(key, [0.0, 0.0])[index] = sample.value
    return {k: (v[0], v[1]) for k, v in found.items() if v[0]}


def _kinds(messages: list[Seen], request_id: str) -> set[str]:
    return {str(m.json().get("kind")) for m in messages if m.json().get("request_id") == request_id}


def by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context is not None}


def service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def parent_service(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    parent = spans.get(span.parent.span_id)
    return service(parent) if parent is not None else "<missing>"


async def test_one_trace_spans_gateway_ingest_transcribe_reason_persist(
    nc: NATS, streams: None, settings: Settings, model_cache: Path, pg_settings: Settings,
    workspace: WorkspaceFactory,
) -> None:
    exported = SharedExporter()
    cfg = gateway_settings(pipeline_settings(settings, model_cache), wait_timeout=120.0)
    cfg = cfg.model_copy(update={
        "database_url": pg_settings.database_url, "master_keys": pg_settings.master_keys})
    ws, api_key = await workspace("traced")
    await provision(cfg, ws)  # its intake stream and upload bucket, as `mumu up` makes them
    async with Collector(nc, "mumu.persisted.>") as persisted, all_stages(cfg, exported), \
            serving(cfg, tracing=Tracing("gateway", None, exporter=exported)) as gw:
        form = aiohttp.FormData()
        form.add_field("audio", (SPEECH / "en03.wav").read_bytes(), filename="q.wav")
        async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/api/session", headers={"Authorization": f"Bearer {api_key}"},
        ) as resp:
            token = (await resp.json())["token"]  # a real session: its API key is checked
        async with aiohttp.ClientSession() as http, http.post(
            f"{gw.url}/api/ask?wait=true", data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            body = await resp.json()
        assert resp.status == 200, body
        rid = body["request_id"]
        # persist stored the transcript and the answer (one persisted event per row batch)
        await persisted.wait_for(lambda ms: _kinds(ms, rid) >= {"transcript", "answer"}, 60)
        traceparent = next(m.headers[h.TRACEPARENT] for m in persisted.messages
                           if m.json().get("request_id") == rid)
        async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/metrics") as resp:
            latency = e2e(await resp.text())
    # the gateway saw every milestone of the request, in order
    assert {k: count for k, (count, _) in latency.items()} == {
        ("audio", "transcript_final"): 1, ("audio", "first_answer_delta"): 1,
        ("audio", "answer_final"): 1}
    took = {k: seconds for k, (_, seconds) in latency.items()}
    assert 0 < took[("audio", "transcript_final")] <= took[("audio", "first_answer_delta")] \
        <= took[("audio", "answer_final")] <= body["timings"]["answer"] + 1.0
    spans = exported.get_finished_spans()
    trace_id = int(traceparent.split("-")[1], 16)
    mine = tuple(s for s in spans if s.context is not None and s.context.trace_id == trace_id)
    index = by_id(mine)
    services = {service(s) for s in mine}
    assert services == {"mumu-gateway", "mumu-ingest", "mumu-transcribe", "mumu-reason",
                        "mumu-persist"}, services
    (root,) = [s for s in mine if s.parent is None]
    assert service(root) == "mumu-gateway" and root.name == "gateway ask audio"
    edges = {(parent_service(s, index), service(s)) for s in mine if s.parent is not None}
    assert ("mumu-gateway", "mumu-ingest") in edges
    assert ("mumu-ingest", "mumu-transcribe") in edges
    assert ("mumu-transcribe", "mumu-reason") in edges
    assert ("mumu-reason", "mumu-persist") in edges  # the answer's rows
    assert ("mumu-transcribe", "mumu-persist") in edges  # the transcript's rows
    assert "<missing>" not in {p for p, _ in edges}, edges
    for span in mine:  # every span says whose request it is
        assert span.attributes is not None
        assert span.attributes["mumu.workspace_id"] == ws, (span.name, span.attributes)
    ingest = next(s for s in mine if service(s) == "mumu-ingest")
    assert ingest.attributes is not None
    assert ingest.attributes["messaging.destination.name"] == f"mumu.ingest.audio.{ws}"
