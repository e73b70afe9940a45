"""The router over real gRPC on 127.0.0.1: routing, reporting, refusals, health, reflection, metrics."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switchpoint.router.frontdoors.grpc_router import STATUS_CODES
from switchpoint.v1 import router_pb2

from .conftest import ThreadedRouter, chat, wait_for


def test_route_returns_pool_model_replica_headers_and_signals(router):
    code = "Please refactor this Python function so that it stops leaking memory:\n" + "def f(x): return x\n" * 100
    d = router.stub.Route(chat(code), timeout=5)
    assert (d.policy, d.decision, d.pool, d.model) == ("default/auto", "coding", "large-reasoning",
                                                       "Qwen/Qwen2.5-72B-Instruct")
    assert d.replica in ("127.0.0.1:8202", "127.0.0.1:8203") and d.prefill_replica == "127.0.0.1:8201"
    assert d.headers["x-gateway-destination-endpoint"] == d.replica
    assert d.headers["x-prefiller-host-port"] == d.prefill_replica
    assert d.headers["x-switchpoint-request-id"] == d.request_id
    assert "code" in d.signals and "matched code" in d.reason
    assert [f.pool for f in d.fallbacks] == ["large-reasoning", "small-chat"]


def test_aggregated_pool_has_no_prefill_replica(router):
    d = router.stub.Route(chat("hello there, how are you today?"), timeout=5)
    assert d.decision == "default" and d.pool == "small-chat" and d.prefill_replica == ""
    assert "x-prefiller-host-port" not in d.headers


def test_a_short_prompt_in_a_disaggregated_pool_is_prefilled_where_it_decodes(router):
    d = router.stub.Route(chat("Please refactor this Python function"), timeout=5)
    assert d.pool == "large-reasoning" and d.replica in ("127.0.0.1:8202", "127.0.0.1:8203")
    assert d.prefill_replica == "" and "x-prefiller-host-port" not in d.headers


def test_a_served_model_name_routes_directly(router):
    d = router.stub.Route(chat("hi", model="meta-llama/Llama-3.1-8B-Instruct"), timeout=5)
    assert d.decision == "direct" and d.pool == "small-chat" and d.policy == ""


def test_a_client_request_id_is_kept_and_may_not_be_reused_while_in_flight(router):
    d = router.stub.Route(chat("hi", request_id="frontend-42"), timeout=5)
    assert d.request_id == "frontend-42"
    with pytest.raises(grpc.RpcError) as caught:
        router.stub.Route(chat("hi", request_id="frontend-42"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    router.stub.Report(router_pb2.ReportRequest(request_id="frontend-42", outcome=router_pb2.OUTCOME_SUCCESS))
    assert router.stub.Route(chat("hi", request_id="frontend-42"), timeout=5).request_id == "frontend-42"


@pytest.fixture
def least_request_router(config_dir: Path):
    """The examples with the least-request profile on small-chat: the switchpoint profile's predicted latency
    ties two idle replicas once a tiny prompt's backlog has drained (a slow machine), and ties are random."""
    policy = config_dir / "policy.yaml"
    policy.write_text(policy.read_text() + "  scheduling: [{pool: small-chat, profile: least-request}]\n")
    with ThreadedRouter(config_paths=[config_dir]) as running:
        yield running


def test_least_inflight_spreads_and_report_frees_the_replica(least_request_router):
    router = least_request_router
    ids = [router.stub.Route(chat("hello there friend"), timeout=5) for _ in range(4)]
    assert sorted(d.replica for d in ids) == ["127.0.0.1:8101"] * 2 + ["127.0.0.1:8102"] * 2
    assert 'switchpoint_replica_inflight{replica="127.0.0.1:8101"} 2.0' in router.metrics_text()
    for d in ids:
        reply = router.stub.Report(router_pb2.ReportRequest(
            request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS, prompt_tokens=12, completion_tokens=30,
            ttft_ms=80, latency_ms=900), timeout=5)
        assert (reply.decision, reply.pool) == ("default", "small-chat")
    text = router.metrics_text()
    assert "switchpoint_replica_inflight{" not in text
    cell = 'decision="default",pool="small-chat",workload="chat/single/decode/cold"'
    reports = 'switchpoint_reports_total{decision="default",outcome="success",pool="small-chat",workload='
    assert reports + '"chat/single/decode/cold"} 4.0' in text
    assert ('switchpoint_tokens_total{decision="default",pool="small-chat",type="output",'
            'workload="chat/single/decode/cold"} 120.0') in text
    assert f'switchpoint_request_ttft_seconds_count{{{cell}}} 4.0' in text
    assert f'switchpoint_cost_usd_total{{{cell}}}' in text


REFUSALS = [
    ("empty messages", router_pb2.RouteRequest(model="auto"), grpc.StatusCode.INVALID_ARGUMENT,
     "messages: at least one message is required"),
    ("unknown role", router_pb2.RouteRequest(model="auto", messages=[router_pb2.ChatMessage(role="bot", content="x")]),
     grpc.StatusCode.INVALID_ARGUMENT, "messages[0].role: unknown role 'bot'"),
    ("unknown alias", chat("hi", model="gpt-9"), grpc.StatusCode.NOT_FOUND, "model 'gpt-9' is neither"),
    ("5 MB prompt", chat("x" * 5_000_000), grpc.StatusCode.INVALID_ARGUMENT, "the limit is 4,194,304 bytes"),
    ("context larger than any pool", chat("hello " * 10, max_tokens=40_000), grpc.StatusCode.INVALID_ARGUMENT,
     "has no pool that large"),
]


@pytest.mark.parametrize(("what", "request_msg", "code", "fragment"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_bad_input_is_refused_and_the_server_keeps_serving(router, what, request_msg, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        router.stub.Route(request_msg, timeout=10)
    assert caught.value.code() == code and fragment in caught.value.details()
    assert router.stub.Route(chat("still there?"), timeout=5).pool == "small-chat"
    reason = next(kind for kind, c in STATUS_CODES.items() if c == code)
    assert f'switchpoint_route_errors_total{{reason="{reason}"}} 1.0' in router.metrics_text()


def test_non_utf8_bytes_on_the_wire_get_invalid_argument_naming_the_field(router):
    raw = router.channel.unary_unary("/switchpoint.v1.Router/Route")
    data = chat("XXXX").SerializeToString().replace(b"XXXX", b"\xc3\x28ab")
    with pytest.raises(grpc.RpcError) as caught:
        raw(data, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "messages[0].content: not valid UTF-8"


@pytest.mark.parametrize(("report", "code", "fragment"), [
    (router_pb2.ReportRequest(outcome=router_pb2.OUTCOME_SUCCESS), grpc.StatusCode.INVALID_ARGUMENT,
     "request_id: required"),
    (router_pb2.ReportRequest(request_id="x"), grpc.StatusCode.INVALID_ARGUMENT, "outcome: required"),
    (router_pb2.ReportRequest(request_id="x", outcome=router_pb2.OUTCOME_ERROR, ttft_ms=-1),
     grpc.StatusCode.INVALID_ARGUMENT, "ttft_ms: must be a finite number"),
    (router_pb2.ReportRequest(request_id="never-routed", outcome=router_pb2.OUTCOME_ERROR), grpc.StatusCode.NOT_FOUND,
     "is not in flight here"),
])
def test_bad_reports_are_refused(router, report, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        router.stub.Report(report, timeout=5)
    assert caught.value.code() == code and fragment in caught.value.details()


def test_a_pool_without_ready_replicas_is_unavailable_and_named(tmp_path: Path, config_dir: Path):
    pools = (config_dir / "pools.yaml").read_text()
    pools = pools.replace("""  replicas:
    static:
      - address: 127.0.0.1:8101
      - address: 127.0.0.1:8102
""", """  metrics: {intervalMs: 20, failuresToUnready: 1}
  replicas:
    static:
      - address: 127.0.0.1:8101
      - address: 127.0.0.1:8102
""")  # nothing listens there: the first failed scrapes take both out of rotation
    (config_dir / "pools.yaml").write_text(pools)
    with ThreadedRouter(config_paths=[config_dir]) as running:
        def refused() -> grpc.RpcError | None:
            try:
                running.stub.Route(chat("plain hello", model="meta-llama/Llama-3.1-8B-Instruct"), timeout=5)
            except grpc.RpcError as exc:
                return exc
            return None

        assert wait_for(lambda: refused() is not None)
        caught = refused()
        assert caught is not None and caught.code() == grpc.StatusCode.UNAVAILABLE
        assert "pool 'small-chat': no ready replica" in caught.details()
        # the default decision falls back to its second candidate
        assert running.stub.Route(chat("plain hello"), timeout=5).pool == "large-reasoning"


def test_health_and_reflection_are_served(router):
    health = health_pb2_grpc.HealthStub(router.channel)
    for service in ("", "switchpoint.v1.Router"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(router.channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"switchpoint.v1.Router", "grpc.health.v1.Health"} <= names


def test_route_latency_histogram_is_labelled_by_decision_and_pool(router):
    router.stub.Route(chat("hello there"), timeout=5)
    text = router.metrics_text()
    assert re.search(r'switchpoint_route_duration_seconds_count\{decision="default",pool="small-chat"\} 1\.0', text)
    assert re.search(r'switchpoint_route_requests_total\{decision="default",policy="default/auto",pool="small-chat",'
                     r'workload="chat/single/decode/cold"\} 1\.0', text)
    assert 'switchpoint_config_info{digest="' in text
