"""The `switchpoint` command as a user runs it: separate processes, real output."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT


def switchpoint(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchpoint.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_route_explains_signals_rules_decision_pool_and_replica():
    long_code = "Please refactor this Python class so it is testable:\n" + "def f(x):\n    return x + 1\n" * 100
    out = switchpoint("route", "--config", str(EXAMPLES), long_code)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "FIRED  code" in text and "MATCH      200  coding: code" in text
    assert "decision   coding" in text and "pool       large-reasoning (nvidia-h100)" in text
    assert "prefill 127.0.0.1:8201" in text and "(switchpoint;" in text


def test_route_json_lists_every_signal():
    out = switchpoint("route", "--config", str(EXAMPLES), "--tenant", "acme", "--json", "hello")
    info = json.loads(out.stdout)
    assert len(info["signals"]) == 8 and info["decision"] == "premium"
    assert {s["name"] for s in info["signals"] if s["fired"]} == {"short-question", "premium-tenant"}


def test_route_reports_a_refusal():
    out = switchpoint("route", "--config", str(EXAMPLES), "--model", "gpt-9", "hello")
    assert out.returncode == 1 and "model 'gpt-9' is neither" in out.stderr


def test_check_lists_problems_with_file_object_and_field(tmp_path: Path):
    policy = (EXAMPLES / "policy.yaml").read_text().replace("{signal: agent}", "{signal: agnet}")
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "pools.yaml").write_text((EXAMPLES / "pools.yaml").read_text())
    out = switchpoint("check", "--config", str(tmp_path))
    assert out.returncode == 2
    assert (f"{tmp_path / 'policy.yaml'}: RoutingPolicy default/auto: spec.decisions[0].when.signal: "
            "unknown signal 'agnet'") in out.stderr
    ok = switchpoint("check", "--config", str(EXAMPLES))
    assert ok.returncode == 0 and "2 pools, 2 policies, 3 budgets" in ok.stdout


def test_router_refuses_to_start_on_a_broken_config(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("apiVersion: switchpoint.dev/v1alpha1\nkind: ModelPool\nmetadata: {name: x}\n")
    out = switchpoint("router", "--config", str(tmp_path), "--port", "0", timeout=30)
    assert out.returncode == 2 and "ModelPool default/x: spec: required field is missing" in out.stderr


def test_demo_routes_the_sample_prompts():
    out = switchpoint("demo", "--config", str(EXAMPLES), "--duration", "4")
    assert out.returncode == 0, out.stderr
    for decision in ("coding", "math-reasoning", "agentic", "premium", "long-documents", "direct", "default"):
        assert decision in out.stdout
    assert "unknown alias -> NOT_FOUND" in out.stdout
    assert "sent " in out.stdout and "TTFT p50" in out.stdout  # the live workload ran and was summarised
    assert "RESOURCE_EXHAUSTED: budget default/trial-tenant-tokens is spent" in out.stdout


def test_bench_router_prints_the_documented_json():
    out = switchpoint("bench", "router", "--config", str(EXAMPLES), "--duration", "0.3", "--latency-calls", "30",
                      "--sections", "prompt-size", "--quick", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("route_p50_ms", "route_p99_ms", "route_rps", "floor_p50_ms", "floor_p99_ms", "floor_rps"):
        assert result[key] > 0
    sizes = result["prompt_size"]
    for key in ("cpu_us_1kb", "cpu_us_1mb", "floor_cpu_us_1mb", "small_p99_alone_ms", "small_p99_burst_ms"):
        assert sizes[key] > 0
    assert sizes["burst_1mb_routes"] >= 40 and "fleet" not in result


def test_bench_budgets_prints_the_documented_json():
    out = switchpoint("bench", "budgets", "--config", str(EXAMPLES), "--calls", "30", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("route_p50_ms", "route_p99_ms", "baseline_p50_ms", "baseline_p99_ms", "unleased_p50_ms"):
        assert result[key] > 0
    assert "added_paired_p50_ms" in result and "unleased_added_p50_ms" in result
    assert 0 <= result["overspend_ratio"] <= result["bound_ratio"] + 1e-9


def test_budget_status_reads_a_running_router(tmp_path: Path):
    from switchpoint.localproc import RouterProcess
    from switchpoint.localredis import RedisServer

    with RedisServer(tmp_path) as redis, RouterProcess([EXAMPLES], extra=["--redis", redis.url]) as router:
        out = switchpoint("budget", "status", "--router", router.address, "--tenant", "acme")
    assert out.returncode == 0, out.stderr
    assert "default/acme-daily-tokens" in out.stdout and "default/per-tenant-monthly-spend/acme" in out.stdout
    assert "5,000,000" in out.stdout


def test_bench_scheduling_quick_prints_the_documented_json(tmp_path: Path):
    plot = tmp_path / "ttft.png"
    out = switchpoint("bench", "scheduling", "--quick", "--workloads", "mixed", "--json", "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    by_rate = result["workloads"]["mixed"]
    assert set(by_rate) == {"2", "3", "4", "5"}
    for by_policy in by_rate.values():
        assert set(by_policy) == {"round_robin", "random", "least_request", "gie_default", "switchpoint"}
        for stats in by_policy.values():
            assert set(stats) == {"ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "throughput_tok_s",
                                  "slo_attainment"}
            assert stats["ttft_p50_ms"] <= stats["ttft_p99_ms"] and 0 <= stats["slo_attainment"] <= 1
    assert result["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matrix_reads_a_running_router(tmp_path: Path):
    import grpc

    from switchpoint.localproc import RouterProcess
    from switchpoint.v1 import router_pb2, router_pb2_grpc

    with RouterProcess([EXAMPLES]) as router:
        with grpc.insecure_channel(router.address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            for text in ("hello there", "Refactor this Python class please", "hello again"):
                d = stub.Route(router_pb2.RouteRequest(model="auto", messages=[
                    router_pb2.ChatMessage(role="user", content=text)]), timeout=5)
                stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                     ttft_ms=80, latency_ms=400), timeout=5)
        url = f"http://127.0.0.1:{router.metrics_port}/metrics"
        out = switchpoint("matrix", "--metrics", url)
        as_json = json.loads(switchpoint("matrix", "--metrics", url, "--json").stdout)
    assert out.returncode == 0, out.stderr
    assert "chat/single/decode/cold" in out.stdout and "default -> small-chat" in out.stdout
    assert "coding -> large-reasoning" in out.stdout and "3 requests" in out.stdout
    cell = next(c for c in as_json if c["decision"] == "default")
    assert cell["requests"] == 2 and 50 <= cell["ttft_p50_ms"] <= 100


def test_a_router_whose_port_is_taken_says_so_and_exits_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = switchpoint("router", "--config", str(EXAMPLES), "--port", str(port))
    assert out.returncode == 1
    assert f"switchpoint router: cannot start: cannot bind the gRPC port {port} on 127.0.0.1" in out.stderr


@pytest.mark.parametrize("args, code, message", [
    (["--settle-key-file", "/nonexistent/settle.key"], 1, "cannot read /nonexistent/settle.key"),
    (["--inflight-ttl", "0"], 2, "--inflight-ttl: must be > 0"),
    (["--inflight-ttl", "soon"], 2, "--inflight-ttl: a number of seconds"),
])
def test_router_refuses_bad_settlement_flags_by_name(args, code, message):
    out = switchpoint("router", "--config", str(EXAMPLES), "--port", "0", *args, timeout=60)
    assert out.returncode == code and message in out.stderr, out.stderr
