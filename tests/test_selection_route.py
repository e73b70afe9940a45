"""Selection algorithms in the router: compiled from the policy, prepared at load, used at Route, fed at Report."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchpoint.config.errors import ConfigError
from switchpoint.router.core import check_files
from switchpoint.v1 import router_pb2
from tests.conftest import ROOT, ThreadedRouter, chat

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
POOLS = f"""
apiVersion: switchpoint.dev/v1alpha1
kind: ModelPool
metadata: {{name: weak}}
spec:
  models: [{{name: {WEAK}}}]
  pricing: {{inputPerMillionTokens: 0.6, outputPerMillionTokens: 0.6}}
  replicas: {{static: [{{address: "127.0.0.1:9301"}}]}}
---
apiVersion: switchpoint.dev/v1alpha1
kind: ModelPool
metadata: {{name: strong}}
spec:
  models: [{{name: {STRONG}}}]
  pricing: {{inputPerMillionTokens: 10, outputPerMillionTokens: 30}}
  replicas: {{static: [{{address: "127.0.0.1:9302"}}]}}
"""
POLICY = """
apiVersion: switchpoint.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: chooser}
spec:
  aliases: [chooser]
  default:
    pools: [{pool: weak}, {pool: strong}]
    selection: SELECTION
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """300 rows of the two-model data (the shipped file, cut for speed)."""
    path = tmp_path_factory.mktemp("data") / "mmlu.jsonl"
    with (ROOT / "data" / "routing" / "routellm_mmlu.jsonl").open() as f:
        path.write_text("".join(itertools.islice(f, 0, 14000, 45)))
    return path


def config(tmp_path: Path, selection: str) -> Path:
    (tmp_path / "pools.yaml").write_text(POOLS)
    (tmp_path / "policy.yaml").write_text(POLICY.replace("SELECTION", selection))
    return tmp_path


def route(r: ThreadedRouter, text: str, request_id: str = "") -> router_pb2.Decision:
    return r.stub.Route(chat(text, model="chooser", max_tokens=20, request_id=request_id), timeout=10)


@pytest.mark.parametrize(("lam", "pool"), [(0, "strong"), (1_000_000, "weak")])
def test_knn_trades_predicted_quality_against_cost(tmp_path, dataset, lam, pool):
    cfg = config(tmp_path, f"{{algorithm: knn, dataset: {dataset}, k: 15, lambda: {lam}}}")
    with ThreadedRouter(config_paths=[cfg]) as r:
        d = route(r, "Which enzyme unwinds the DNA double helix during replication?\nA. ligase\nB. helicase")
        assert d.pool == pool
        assert [f.pool for f in d.fallbacks] == [{"weak": "strong", "strong": "weak"}[pool]]


def test_the_explanation_shows_the_evidence(tmp_path, dataset):
    cfg = config(tmp_path, f"{{algorithm: knn, dataset: {dataset}, k: 5, lambda: 10}}")
    out = subprocess.run([sys.executable, "-m", "switchpoint.cli", "route", "--config", str(cfg), "--model",
                          "chooser", "--json", "What is the derivative of sin(x)?"],
                         capture_output=True, text=True, check=True).stdout
    sel = json.loads(out)["selection"]
    assert sel["algorithm"] == "knn" and sel["lambda"] == 10 and len(sel["neighbours"]) == 5
    assert {c["model"] for c in sel["order"]} == {WEAK, STRONG}
    assert all(0 <= c["quality"] <= 1 and c["cost_usd"] > 0 for c in sel["order"])


def test_weighted_is_fixed_per_request_id_and_follows_the_weights(tmp_path):
    cfg = config(tmp_path, "{algorithm: weighted, weights: [3, 1]}")
    with ThreadedRouter(config_paths=[cfg]) as r:
        pools = [route(r, "hello", request_id=f"req-{i}").pool for i in range(200)]
        for i in range(200):
            r.stub.Report(router_pb2.ReportRequest(request_id=f"req-{i}", outcome=router_pb2.OUTCOME_CANCELLED))
        again = [route(r, "hello", request_id=f"req-{i}").pool for i in range(20)]
    assert again == pools[:20]
    assert 0.65 < pools.count("weak") / 200 < 0.85


def test_the_bandit_learns_from_reports_and_shares_it_through_redis(tmp_path, redis_url):
    cfg = config(tmp_path, "{algorithm: bandit, exploration: 0.3}")
    with ThreadedRouter(config_paths=[cfg], redis_url=redis_url) as a, \
            ThreadedRouter(config_paths=[cfg], redis_url=redis_url) as b:
        for _ in range(60):  # the weak pool's answers are rated bad, the strong pool's good
            d = route(a, "hello")
            a.stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                   quality=1.0 if d.pool == "strong" else 0.0), timeout=10)
        time.sleep(2.5)  # both routers sync their counts every second
        picks = [route(b, "hello").pool for _ in range(30)]
    assert picks.count("strong") >= 25


@pytest.mark.parametrize(("selection", "fragment"), [
    ("{algorithm: knn, dataset: /nonexistent/data.jsonl}", "spec.default.selection: knn selection:"),
    ("{algorithm: knn, dataset: DATASET, lambda: -1}", "spec.default.selection.lambda"),
    ("{algorithm: weighted, weights: [1]}", "one weight per candidate pool: 1 weight(s) for 2 pool(s)"),
    ("{algorithm: knn}", "knn needs a dataset"),
])
def test_broken_selection_settings_refuse_the_config(tmp_path, dataset, selection, fragment):
    cfg = config(tmp_path, selection.replace("DATASET", str(dataset)))
    with pytest.raises(ConfigError) as err:
        check_files([cfg])
    assert fragment in str(err.value)


def test_a_model_the_dataset_does_not_know_refuses_the_config(tmp_path, dataset):
    cfg = config(tmp_path, f"{{algorithm: knn, dataset: {dataset}}}")
    (cfg / "pools.yaml").write_text(POOLS.replace(STRONG, "claude-9"))
    with pytest.raises(ConfigError) as err:
        check_files([cfg])
    assert "spec.default.selection" in str(err.value) and "claude-9" in str(err.value)


def test_a_broken_decision_selection_names_the_decision(tmp_path):
    cfg = config(tmp_path, "{algorithm: static}")
    policy = cfg / "policy.yaml"
    policy.write_text(policy.read_text().replace("  default:", """  signals: [{name: long, promptTokens: {min: 100}}]
  decisions:
    - {name: early, priority: 1, when: {signal: long}, pools: [{pool: weak}]}
    - name: late
      priority: 2
      when: {signal: long}
      pools: [{pool: weak}, {pool: strong}]
      selection: {algorithm: knn, dataset: /nonexistent/data.jsonl}
  default:"""))
    with pytest.raises(ConfigError) as err:
        check_files([cfg])
    assert "spec.decisions[name=late].selection: knn selection:" in str(err.value)
