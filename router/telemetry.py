"""OpenTelemetry set-up: an OTLP/gRPC exporter when an endpoint is configured, else a no-op tracer.

The no-op tracer keeps the span calls on the hot path almost free when nobody
collects traces; with an endpoint, spans go through a bounded batch queue, so
a slow or absent collector drops spans instead of slowing routing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchpoint import __version__
from switchpoint.overlaps import require

TRACER_NAME = "switchpoint.router"
_PROPAGATOR = TraceContextTextMapPropagator()


SpanCounter = Callable[[str, int], None]  # (stage: ended | exported | export_failed, count)


class _CountingExporter(SpanExporter):
    """Counts what reaches the collector and what does not (the SDK keeps its own drops internal)."""

    def __init__(self, inner: SpanExporter, count: SpanCounter):
        self.inner = inner
        self.count = count

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.count("exported" if result is SpanExportResult.SUCCESS else "export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingBatchProcessor(BatchSpanProcessor):
    def __init__(self, exporter: SpanExporter, count: SpanCounter):
        super().__init__(exporter)
        self.count = count

    def on_end(self, span: ReadableSpan) -> None:
        if span.context and span.context.trace_flags.sampled:
            self.count("ended", 1)
        super().on_end(span)


def check_otlp_protos() -> None:
    """The OTLP exporter needs opentelemetry-proto's generated modules (see switchpoint/overlaps.py)."""
    from opentelemetry.proto.common.v1 import common_pb2

    require(hasattr(common_pb2, "InstrumentationScope"), "opentelemetry/proto (needed for OTLP export)")


def otlp_tracer_provider(endpoint: str, service_name: str = "switchpoint-router",
                         count: SpanCounter | None = None, timeout_s: float = 5.0) -> TracerProvider:
    """OTLP/gRPC export through a bounded batch queue (2,048 spans; the oldest are dropped when full).

    With `count`, spans ended, exported and failed are counted: ended minus exported minus failed
    is what is queued or was dropped. Sampling follows OTEL_TRACES_SAMPLER (parent-based by default).
    """
    check_otlp_protos()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                        "service.version": __version__}))
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=timeout_s)
    if count is None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        provider.add_span_processor(_CountingBatchProcessor(_CountingExporter(exporter, count), count))
    return provider


def tracer_from(provider: trace.TracerProvider | None) -> trace.Tracer:
    return provider.get_tracer(TRACER_NAME, __version__) if provider else trace.NoOpTracer()


def context_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> context.Context:
    """The W3C trace context the caller sent in gRPC metadata; malformed headers are ignored."""
    carrier = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)}
    return _PROPAGATOR.extract(carrier) if carrier else context.Context()
