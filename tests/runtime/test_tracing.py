"""traceparent is carried from input to outputs; with an exporter, each message is a child span."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mumu.contracts import headers as h
from mumu.runtime.tracing import Tracing, new_traceparent

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_an_exporter_the_incoming_context_is_carried_along() -> None:
    tracing = Tracing("t", None)
    span = tracing.start("t", {h.TRACEPARENT: PARENT, h.TRACESTATE: "vendor=1"})
    assert span.headers == {h.TRACEPARENT: PARENT, h.TRACESTATE: "vendor=1"}
    span.end("nak")  # no span to end: nothing happens


def test_a_message_without_context_starts_a_new_trace() -> None:
    headers = Tracing("t", None).start("t", {}).headers
    version, trace_id, span_id, flags = headers[h.TRACEPARENT].split("-")
    assert (version, flags) == ("00", "01")
    assert len(trace_id) == 32 and len(span_id) == 16
    assert new_traceparent() != new_traceparent()


def test_with_an_exporter_outputs_carry_a_child_span_of_the_input() -> None:
    exported = InMemorySpanExporter()
    tracing = Tracing("t", None, exporter=exported)
    span = tracing.start("t", {h.TRACEPARENT: PARENT})
    _, trace_id, span_id, _ = span.headers[h.TRACEPARENT].split("-")
    assert trace_id == PARENT.split("-")[1]  # same trace
    assert span_id != PARENT.split("-")[2]  # a new span, child of the input's
    assert span.span is not None
    assert span.span.parent is not None
    assert f"{span.span.parent.span_id:016x}" == PARENT.split("-")[2]
    span.end("term")
    tracing.shutdown()
    (done,) = exported.get_finished_spans()
    assert done.name == "t"
    assert not done.status.is_ok
    assert done.resource.attributes["service.name"] == "mumu-t"
