"""OpenTelemetry set-up: an OTLP/gRPC exporter when an endpoint is configured, else a no-op tracer.

The no-op tracer keeps the span calls on the hot path almost free when nobody
collects traces; with an endpoint, spans go through a bounded batch queue, so
a slow or absent collector drops spans instead of slowing routing.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchpoint import __version__

TRACER_NAME = "switchpoint.router"
_PROPAGATOR = TraceContextTextMapPropagator()


def otlp_tracer_provider(endpoint: str, service_name: str = "switchpoint-router") -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                        "service.version": __version__}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return provider


def tracer_from(provider: trace.TracerProvider | None) -> trace.Tracer:
    return provider.get_tracer(TRACER_NAME, __version__) if provider else trace.NoOpTracer()


def context_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> context.Context:
    """The W3C trace context the caller sent in gRPC metadata; malformed headers are ignored."""
    carrier = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)}
    return _PROPAGATOR.extract(carrier) if carrier else context.Context()
