"""OpenTelemetry across stages: ``traceparent`` in, span, ``traceparent`` out.

With an OTLP endpoint configured every handled message gets a real span, child of
the incoming ``traceparent``. Without one nobody would receive the spans, so the
runtime only carries the W3C context along (and starts one when a producer sent
none): building SDK spans costs about as much as the rest of the hop.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mumu import __version__
from mumu.contracts import headers as h

_PROPAGATOR = TraceContextTextMapPropagator()


def new_traceparent() -> str:
    """A fresh sampled W3C trace context (version 00)."""
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"


class Tracing:
    """Spans of one process; call ``shutdown`` on exit to flush them."""

    def __init__(self, service: str, otlp_endpoint: str | None) -> None:
        self.provider: TracerProvider | None = None
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": f"mumu-{service}", "service.version": __version__}
                )
            )
            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
            )
            self._tracer = self.provider.get_tracer("mumu.runtime", __version__)

    @contextlib.contextmanager
    def span(self, name: str, incoming: Mapping[str, str]) -> Iterator[SpanHeaders]:
        """A span for one message; yields the trace headers to put on its outputs."""
        if self.provider is None:
            parent = incoming.get(h.TRACEPARENT) or new_traceparent()
            out = {h.TRACEPARENT: parent}
            if h.TRACESTATE in incoming:
                out[h.TRACESTATE] = incoming[h.TRACESTATE]
            yield SpanHeaders(out)
            return
        context = _PROPAGATOR.extract(carrier=dict(incoming))
        with self._tracer.start_as_current_span(
            name, context=context, kind=SpanKind.CONSUMER
        ) as sp:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            result = SpanHeaders(carrier)
            yield result
            if result.failed:
                sp.set_status(Status(StatusCode.ERROR, result.failed))

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


class SpanHeaders(dict[str, str]):
    """Trace headers of a span's outputs; set ``failed`` to mark the span as an error."""

    failed: str | None = None
