"""OpenTelemetry across stages: ``traceparent`` in, span, ``traceparent`` out.

The gateway starts each request's trace (``Tracing.begin``); every stage's span is a
child of the span before it, so one trace spans gateway -> ingest -> transcribe ->
reason -> persist.

With an OTLP endpoint configured every handled message gets a real span, child of
the incoming ``traceparent``. Without one nobody would receive the spans, so the
runtime only carries the W3C context along (and starts one when a producer sent
none): building SDK spans costs about as much as the rest of the hop.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mumu import __version__
from mumu.contracts import headers as h

_PROPAGATOR = TraceContextTextMapPropagator()


def new_traceparent() -> str:
    """A fresh sampled W3C trace context (version 00)."""
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"


class Tracing:
    """Spans of one process; call ``shutdown`` on exit to flush them."""

    def __init__(
        self, service: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None
    ) -> None:
        """Spans go to ``exporter`` if given, else to the OTLP/HTTP ``otlp_endpoint``."""
        self.provider: TracerProvider | None = None
        if exporter is None and otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
        if exporter is not None:
            self.provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": f"mumu-{service}", "service.version": __version__}
                )
            )
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self.provider.get_tracer("mumu.runtime", __version__)

    def start(
        self, name: str, incoming: Mapping[str, str], subject: str | None = None
    ) -> MessageSpan:
        """A span for one message (received on ``subject``); ``headers`` go on its
        outputs, ``end`` closes it."""
        if self.provider is None:
            parent = incoming.get(h.TRACEPARENT) or new_traceparent()
            out = {h.TRACEPARENT: parent}
            if h.TRACESTATE in incoming:
                out[h.TRACESTATE] = incoming[h.TRACESTATE]
            return MessageSpan(out)
        context = _PROPAGATOR.extract(carrier=dict(incoming))
        attributes = {"messaging.system": "nats"}
        if subject is not None:  # mumu subjects end with the workspace
            attributes["messaging.destination.name"] = subject
            attributes["mumu.workspace_id"] = subject.rsplit(".", 1)[-1]
        span = self._tracer.start_span(
            name, context=context, kind=SpanKind.CONSUMER, attributes=attributes)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return MessageSpan(carrier, span)

    def begin(self, name: str, attributes: Mapping[str, str] | None = None) -> MessageSpan:
        """A new trace for a request entering mumu (the gateway's ask): a root span, whose
        ``traceparent`` goes on the published message so every stage's span joins it."""
        if self.provider is None:
            return MessageSpan({h.TRACEPARENT: new_traceparent()})
        span = self._tracer.start_span(
            name, context=Context(), kind=SpanKind.PRODUCER, attributes=dict(attributes or {}))
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return MessageSpan(carrier, span)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


class MessageSpan:
    """The trace headers of one message's outputs, and its span when traces are exported."""

    __slots__ = ("headers", "span")

    def __init__(self, headers: dict[str, str], span: Span | None = None) -> None:
        self.headers = headers
        self.span = span

    def end(self, failed: str | None = None) -> None:
        if self.span is None:
            return
        if failed:
            self.span.set_status(Status(StatusCode.ERROR, failed))
        self.span.end()
