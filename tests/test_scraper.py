"""Live replica state: parsing engine metrics, and the router scraping a simulated fleet, with faults."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from switchpoint.config.model import MetricsConfig
from switchpoint.localproc import SimProcess
from switchpoint.localredis import free_port
from switchpoint.router.scheduling.scraper import parse_vllm_metrics
from switchpoint.v1 import router_pb2

from .conftest import ThreadedRouter, chat, wait_for

VLLM = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 2
vllm:num_requests_waiting{model_name="b"} 1
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 7
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="a"} 0.42
"""
LEGACY = "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.9\n"
SGLANG = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs 3\n# TYPE sglang:token_usage gauge\n" \
         "sglang:token_usage 0.5\n"


@pytest.mark.parametrize(("text", "names", "expected"), [
    (VLLM, MetricsConfig(), (3.0, 7.0, 0.42)),
    (LEGACY, MetricsConfig(), (None, None, 0.9)),
    (SGLANG, MetricsConfig(waiting=("sglang:num_queue_reqs",), kv_usage=("sglang:token_usage",)), (3.0, None, 0.5)),
    ("", MetricsConfig(), (None, None, None)),
])
def test_engine_metrics_are_read_by_name_and_summed_over_labels(text, names, expected):
    assert parse_vllm_metrics(text, names) == expected


def test_garbage_is_not_metrics():
    with pytest.raises(ValueError):
        parse_vllm_metrics("vllm:num_requests_waiting{{{ nope\n", MetricsConfig())


@pytest.fixture
def live_fleet(tmp_path: Path, config_dir: Path):
    """Two simulated replicas behind the example pool `small-chat`, scraped every 50 ms."""
    ports = [free_port(), free_port()]
    (tmp_path / "fleet.json").write_text(json.dumps({"replicas": [
        {"port": p, "model": "meta-llama/Llama-3.1-8B-Instruct"} for p in ports]}))
    docs = list(yaml.safe_load_all((config_dir / "pools.yaml").read_text()))
    docs[0]["spec"]["replicas"] = {"static": [{"address": f"127.0.0.1:{p}"} for p in ports]}
    docs[0]["spec"]["metrics"] = {"intervalMs": 50}
    (config_dir / "pools.yaml").write_text(yaml.safe_dump_all(docs))
    with SimProcess(tmp_path / "fleet.json"):
        yield ports, config_dir


def set_fault(port: int, fault: str | None) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sim/fault", data=json.dumps({"metrics": fault}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


def replicas_chosen(router: ThreadedRouter, n: int = 8) -> set[str]:
    chosen = set()
    for _ in range(n):
        d = router.stub.Route(chat("hello there friend", model="meta-llama/Llama-3.1-8B-Instruct"), timeout=5)
        router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS))
        chosen.add(d.replica)
    return chosen


@pytest.mark.parametrize("fault", ["hang", "garbage"])
def test_a_failing_replica_leaves_rotation_and_comes_back(live_fleet, fault):
    ports, config = live_fleet
    bad = f"127.0.0.1:{ports[0]}"
    with ThreadedRouter(config_paths=[config]) as router:
        assert wait_for(lambda: f'switchpoint_replica_running{{replica="{bad}"}}' in router.metrics_text())
        set_fault(ports[0], fault)
        assert wait_for(lambda: f'switchpoint_replica_scrape_failures{{replica="{bad}"}} 3.0'
                        in router.metrics_text() or f'failures{{replica="{bad}"}} 4.0' in router.metrics_text())
        assert replicas_chosen(router) == {f"127.0.0.1:{ports[1]}"}
        set_fault(ports[0], None)
        assert wait_for(lambda: bad in replicas_chosen(router, 4))


def test_a_pool_whose_replicas_all_fail_is_unavailable_and_named(live_fleet):
    ports, config = live_fleet
    with ThreadedRouter(config_paths=[config]) as router:
        for port in ports:
            set_fault(port, "garbage")
        def refused() -> bool:
            try:
                router.stub.Route(chat("hi", model="meta-llama/Llama-3.1-8B-Instruct"), timeout=5)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAVAILABLE and "pool 'small-chat'" in exc.details()
            return False
        assert wait_for(refused)
        for port in ports:
            set_fault(port, None)


def test_a_replica_removed_mid_request_still_settles(live_fleet):
    ports, config = live_fleet
    with ThreadedRouter(config_paths=[config], reload_interval=0.05) as router:
        d = router.stub.Route(chat("hello", model="meta-llama/Llama-3.1-8B-Instruct"), timeout=5)
        docs = list(yaml.safe_load_all((config / "pools.yaml").read_text()))
        keep = [p for p in ports if f"127.0.0.1:{p}" != d.replica]
        docs[0]["spec"]["replicas"] = {"static": [{"address": f"127.0.0.1:{p}"} for p in keep]}
        (config / "pools.yaml").write_text(yaml.safe_dump_all(docs))
        assert wait_for(lambda: 'result="applied"' in router.metrics_text())
        reply = router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id,
                                                            outcome=router_pb2.OUTCOME_ERROR), timeout=5)
        assert reply.pool == "small-chat"
        assert replicas_chosen(router, 4) == {f"127.0.0.1:{keep[0]}"}
