"""OpenTelemetry across stages: ``traceparent`` in, span, ``traceparent`` out."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mumu import __version__

_PROPAGATOR = TraceContextTextMapPropagator()


def build_tracer(service: str, otlp_endpoint: str | None) -> tuple[TracerProvider, Tracer]:
    """A provider of this process (not installed globally) and its tracer."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mumu-{service}", "service.version": __version__})
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    return provider, provider.get_tracer("mumu.runtime", __version__)


def extract(headers: Mapping[str, str]) -> Context:
    return _PROPAGATOR.extract(carrier=dict(headers))


def inject(context: Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier
