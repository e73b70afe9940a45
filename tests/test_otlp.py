"""Traces over OTLP/gRPC to a real receiver (the collector's TraceService on loopback)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchpoint.localredis import free_port
from switchpoint.v1 import router_pb2

from .conftest import EXAMPLES, ThreadedRouter, chat, wait_for


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """What an OpenTelemetry collector's OTLP/gRPC receiver does: accept ExportTraceServiceRequests."""

    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"127.0.0.1:{port}"
    server.stop(0)


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = (v.string_value or v.int_value or v.double_value or v.bool_value
                      or [x.string_value for x in v.array_value.values])
    return out


def test_a_real_router_exports_the_route_span_tree_over_otlp(collector):
    receiver, endpoint = collector
    client = TracerProvider().get_tracer("frontend")
    with ThreadedRouter(config_paths=[EXAMPLES], otlp_endpoint=endpoint) as router:
        with client.start_as_current_span("frontend") as parent:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            d = router.stub.Route(chat("Refactor this Python class " * 40, tenant="acme"),
                                  metadata=tuple(carrier.items()), timeout=5)
        router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                    prompt_tokens=200, completion_tokens=20, ttft_ms=90), timeout=5)
        router.server.tracer_provider.force_flush()
        assert wait_for(lambda: len(receiver.spans) >= 6)
        text = router.metrics_text()
    assert 'switchpoint_trace_spans_total{stage="ended"} 6.0' in text
    assert 'switchpoint_trace_spans_total{stage="exported"} 6.0' in text
    by_name = {s.name: s for s in receiver.spans}
    root = by_name["switchpoint.route"]
    assert root.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
    assert root.parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")
    for stage in ("switchpoint.workload", "switchpoint.decision", "switchpoint.placement", "switchpoint.budget"):
        assert by_name[stage].parent_span_id == root.span_id, stage
    attrs = attributes(root)
    assert attrs["switchpoint.decision"] == "coding" and attrs["switchpoint.pool"] == "large-reasoning"
    assert attrs["switchpoint.workload"].startswith("chat/single/")
    assert attrs["gen_ai.request.model"] == "auto"
    report = by_name["switchpoint.report"]
    assert report.links[0].span_id == root.span_id
    assert receiver.resources[0]["service.name"] == "switchpoint-router"


def test_an_unreachable_collector_never_fails_or_stalls_routing():
    with ThreadedRouter(config_paths=[EXAMPLES], otlp_endpoint=f"127.0.0.1:{free_port()}") as router:
        started = time.monotonic()
        for _ in range(50):
            assert router.stub.Route(chat("hello there"), timeout=5).pool == "small-chat"
        elapsed = time.monotonic() - started
        text = router.metrics_text()
    assert elapsed < 10  # exports happen off the request path (a batch queue), whatever the collector does
    assert 'switchpoint_trace_spans_total{stage="ended"} 250.0' in text  # 5 spans per Route, none exported

