"""Spans: one root per Route with a child per stage, W3C context from gRPC metadata, Report linked to Route."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchpoint.v1 import router_pb2

from .conftest import EXAMPLES, ThreadedRouter, chat

# the example config has budgets, so the budget stage runs (and finds none that applies to this request)
STAGES = ["switchpoint.workload", "switchpoint.decision", "switchpoint.placement", "switchpoint.budget"]


@pytest.fixture
def traced() -> Iterator[tuple[ThreadedRouter, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with ThreadedRouter(config_paths=[EXAMPLES], tracer_provider=provider) as router:
        yield router, exporter


def test_route_has_a_root_span_and_one_child_per_stage(traced):
    router, exporter = traced
    proof = "Prove the theorem that there are infinitely many primes, step by step. " * 30
    d = router.stub.Route(chat(proof), timeout=5)
    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "switchpoint.route"]
    children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    assert [c.name for c in sorted(children, key=lambda s: s.start_time)] == STAGES
    assert root.kind == SpanKind.SERVER
    attrs = root.attributes
    assert attrs["switchpoint.decision"] == d.decision == "math-reasoning"
    assert attrs["switchpoint.pool"] == "large-reasoning" and attrs["switchpoint.replica"] == d.replica
    assert attrs["switchpoint.prefill_replica"] == "127.0.0.1:8201"
    assert attrs["switchpoint.hardware_class"] == "nvidia-h100"
    assert attrs["switchpoint.workload"] == "chat/single/decode/cold"
    assert attrs["gen_ai.request.model"] == "auto" and attrs["gen_ai.response.model"] == d.model
    decision_span = next(c for c in children if c.name == "switchpoint.decision")
    assert "math-words" in decision_span.attributes["switchpoint.signals.fired"]
    assert decision_span.attributes["switchpoint.signal.math-words"].startswith("matched")


def test_the_frontends_trace_context_is_continued(traced):
    router, exporter = traced
    client = TracerProvider().get_tracer("frontend")
    with client.start_as_current_span("frontend.request") as parent:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        router.stub.Route(chat("hello"), metadata=tuple(carrier.items()), timeout=5)
    [root] = [s for s in exporter.get_finished_spans() if s.name == "switchpoint.route"]
    assert root.context.trace_id == parent.get_span_context().trace_id
    assert root.parent.span_id == parent.get_span_context().span_id


def test_malformed_trace_context_is_ignored(traced):
    router, exporter = traced
    d = router.stub.Route(chat("hello"), metadata=(("traceparent", "00-zzz-not-a-trace-01"),), timeout=5)
    assert d.pool == "small-chat"
    [root] = [s for s in exporter.get_finished_spans() if s.name == "switchpoint.route"]
    assert root.parent is None


def test_report_span_links_to_the_route_span(traced):
    router, exporter = traced
    d = router.stub.Route(chat("hello"), timeout=5)
    router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                prompt_tokens=7, completion_tokens=9, ttft_ms=40), timeout=5)
    spans = exporter.get_finished_spans()
    route = next(s for s in spans if s.name == "switchpoint.route")
    report = next(s for s in spans if s.name == "switchpoint.report")
    assert [link.context.span_id for link in report.links] == [route.context.span_id]
    assert report.attributes["gen_ai.usage.output_tokens"] == 9
    assert report.attributes["switchpoint.outcome"] == "success"


def test_refusals_are_recorded_as_errors(traced):
    router, exporter = traced
    with pytest.raises(grpc.RpcError):
        router.stub.Route(chat("hi", model="gpt-9"), timeout=5)
    [root] = [s for s in exporter.get_finished_spans() if s.name == "switchpoint.route"]
    assert not root.status.is_ok and "gpt-9" in root.status.description
    assert root.attributes["switchpoint.refusal"] == "not_found"
