"""Prepared snapshots: a refused config changes nothing that serves, `check` refuses what a router refuses, and
what the router tracks (selectors, bandit states, per-replica scheduling state) is what the config in force names."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from switchpoint.config.errors import ConfigError
from switchpoint.localproc import RouterProcess
from switchpoint.router.classifiers.bank import ModelBank
from switchpoint.router.core import Preparer, check_files
from switchpoint.router.core.offline import assemble
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import ChatTurn, RequestLimits, route_input
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selecting import SelectorBank
from switchpoint.v1 import router_pb2_grpc

from .conftest import EXAMPLES, chat, wait_for

WEIGHTED = """
apiVersion: switchpoint.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: wtest, namespace: default}
spec:
  aliases: [wtest]
  signals: [{name: never, tenant: {in: [nobody]}}]
  decisions:
DECISIONS
  default: {pools: [{pool: small-chat}]}
"""
BEFORE = """    - name: weighted-one
      priority: 10
      when: {not: {signal: never}}
      pools: [{pool: small-chat}, {pool: large-reasoning}]
      selection: {algorithm: weighted, weights: [1, 0]}"""
REFUSED = """    - name: weighted-one
      priority: 10
      when: {not: {signal: never}}
      pools: [{pool: small-chat}, {pool: large-reasoning}]
      selection: {algorithm: weighted, weights: [0, 1]}
    - name: knn-one
      priority: 5
      when: {signal: never}
      pools: [{pool: small-chat}, {pool: large-reasoning}]
      selection: {algorithm: knn, dataset: routellm_mmlu}"""


def _policy_dir(tmp_path: Path, decisions: str) -> Path:
    (tmp_path / "pools.yaml").write_text((EXAMPLES / "pools.yaml").read_text())
    (tmp_path / "wtest.yaml").write_text(WEIGHTED.replace("DECISIONS", decisions))
    return tmp_path


def _pools(stub: router_pb2_grpc.RouterStub, n: int = 20) -> Counter[str]:
    return Counter(stub.Route(chat(f"question {i}", model="wtest"), timeout=5).pool for i in range(n))


def test_a_refused_reload_changes_nothing_that_serves(tmp_path: Path):
    config = _policy_dir(tmp_path, BEFORE)
    with RouterProcess([config], extra=["--reload-interval", "0.05"]) as router, \
            grpc.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        assert _pools(stub) == {"small-chat": 20}
        (config / "wtest.yaml").write_text(WEIGHTED.replace("DECISIONS", REFUSED))

        def refused() -> bool:
            import urllib.request

            text = urllib.request.urlopen(f"http://127.0.0.1:{router.metrics_port}/metrics", timeout=5).read()
            return b'switchpoint_config_reloads_total{result="refused"} 1.0' in text

        assert wait_for(refused)
        assert _pools(stub) == {"small-chat": 20}  # the half-built selectors of the refused config never serve


def test_check_refuses_what_a_router_refuses(tmp_path: Path):
    config = _policy_dir(tmp_path, REFUSED)
    with pytest.raises(ConfigError) as caught:
        check_files([config])
    assert "spec.decisions[name=knn-one].selection" in str(caught.value)
    out = subprocess.run([sys.executable, "-m", "switchpoint.cli", "check", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "spec.decisions[name=knn-one].selection" in out.stderr
    assert "routellm_mmlu" in out.stderr


def test_a_refused_preparation_leaves_the_previous_snapshot_as_it_was(tmp_path: Path):
    preparer = Preparer(ModelBank(), SelectorBank())
    before = preparer.load([_policy_dir(tmp_path, BEFORE)])
    built = dict(before.selectors.built)
    (tmp_path / "wtest.yaml").write_text(WEIGHTED.replace("DECISIONS", REFUSED))
    with pytest.raises(ConfigError):
        preparer.load([tmp_path], before)
    assert dict(before.selectors.built) == built
    (key, selector), = built.values()
    assert key[0].weights == (1.0, 0.0) and selector is before.selectors.built[("default/wtest", "weighted-one")][1]


POOL = """
apiVersion: switchpoint.dev/v1alpha1
kind: ModelPool
metadata: {{name: {name}, namespace: default}}
spec:
  models: [{{name: m-{name}}}]
  replicas: {{static: [{replicas}]}}
"""
POLICY = """
apiVersion: switchpoint.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  aliases: [{name}]
  signals: [{{name: long, promptTokens: {{min: 3}}}}]
  decisions:
    - name: learn
      priority: 1
      when: {{signal: long}}
      pools: [{pools}]
      selection: {{algorithm: bandit}}
  default: {{pools: [{first}]}}
"""


def _churned_config(root: Path, rng: random.Random, step: int) -> Path:
    """A config of 1-3 pools with 1-4 replicas each (addresses drawn from a small range, so they come and go) and
    1-3 policies with a bandit decision each."""
    folder = root / f"c{step}"
    folder.mkdir()
    pools = [f"p{i}" for i in rng.sample(range(5), rng.randint(1, 3))]
    for name in pools:
        addresses = rng.sample(range(9100, 9112), rng.randint(1, 4))
        replicas = ", ".join(f'{{address: "127.0.0.1:{a}"}}' for a in addresses)
        (folder / f"{name}.yaml").write_text(POOL.format(name=name, replicas=replicas))
    for i in rng.sample(range(6), rng.randint(1, 3)):
        chosen = rng.sample(pools, min(len(pools), 2))
        refs = ", ".join(f"{{pool: {p}}}" for p in chosen)
        (folder / f"policy{i}.yaml").write_text(POLICY.format(name=f"pol{i}", pools=refs, first=refs.split(", ")[0]))
    return folder


def test_under_policy_and_replica_churn_the_router_tracks_what_the_config_names(tmp_path: Path, redis_url: str):
    rng = random.Random(7)
    preparer = Preparer(ModelBank(), SelectorBank(redis_url))

    async def churn() -> None:
        core = assemble(preparer.load([_churned_config(tmp_path, rng, 0)]), Scheduler(InflightLedger()))
        deadline = time.monotonic() + 20
        for step in range(1, 40):
            if time.monotonic() > deadline:
                break
            old = core.snapshot
            await core.swap(preparer.load([_churned_config(tmp_path, rng, step)], old))
            config = core.snapshot.config
            for alias in config.aliases:  # route (and settle) some traffic on the new config
                for text in ("hi", "a longer question than that"):
                    req = route_input(model=alias, messages=[ChatTurn("user", text)], limits=RequestLimits())
                    await core.route(req)
                    core.ledger.settle(req.request_id)
            named_pools = set(config.pools)
            named_replicas = {r.address for p in config.pools.values() for r in p.static_replicas}
            pools, replicas = core.scheduler.tracked()
            assert pools <= named_pools and replicas <= named_replicas, step
            learning = {(p.key, "learn") for p in config.policies.values()}
            assert set(core.snapshot.selectors.built) == learning
            assert len(core.snapshot.selectors.bandit_states) == len(learning)
            synced = {s.key for s in core.snapshot.selectors.bandit_states}  # what sync_forever visits
            assert synced == {f"sp:bandit:{{{p}/learn}}" for p, _ in learning}

    asyncio.run(churn())


def test_reused_selectors_keep_what_their_bandit_learned(tmp_path: Path):
    rng = random.Random(3)
    preparer = Preparer(ModelBank(), SelectorBank())
    first = preparer.load([_churned_config(tmp_path, rng, 0)])
    again = preparer.load([tmp_path / "c0"], first)  # the same files: nothing to rebuild
    assert all(again.selectors.built[k][1] is s for k, (_, s) in first.selectors.built.items())
