"""Routers discovering their replicas by watching pods (router/discovery.py), against a real kube-apiserver, with
the credentials of a ServiceAccount that may only list and watch pods in its namespace; and the discovery bench."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from switchpoint.bench.discovery import TARGET_S
from switchpoint.cli import main
from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.config.model import PodSelector, Replica, Role, RouterConfig
from switchpoint.operator.kube import Connection, KubeApi, from_kubeconfig
from switchpoint.router.discovery import ReplicaDiscovery, label_selector
from tests.apiserver_support import ControlPlane

NS = "routers"
ROUTER_SA = "switchpoint-router"


@pytest.mark.parametrize(("labels", "expressions", "expected"), [
    ({"app": "vllm"}, [], "app=vllm"),
    ({"a": "1", "b": "2"}, [], "a=1,b=2"),
    ({}, [("tier", "In", ("gpu", "cpu"))], "tier in (gpu,cpu)"),
    ({"app": "vllm"}, [("role", "NotIn", ("prefill",)), ("ready", "Exists", ()), ("old", "DoesNotExist", ())],
     "app=vllm,role notin (prefill),ready,!old"),
])
def test_label_selector(labels: dict[str, str], expressions: list[tuple[str, str, tuple[str, ...]]],
                        expected: str) -> None:
    selector = PodSelector(tuple(sorted(labels.items())), tuple(expressions), 8000, "llm-d.ai/role")
    assert label_selector(selector) == expected


def test_label_selector_refuses_an_unknown_operator() -> None:
    with pytest.raises(ValueError, match="'Gt' for 'x'"):
        label_selector(PodSelector((), (("x", "Gt", ("1",)),), 8000, "r"))


def pools_config(selector: dict[str, Any], static: list[str]) -> RouterConfig:
    selected = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "watched", "namespace": NS},
                "spec": {"models": [{"name": "m"}], "replicas": {"selector": selector, "port": 8000}}}
    fixed = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "fixed", "namespace": NS},
             "spec": {"models": [{"name": "m"}], "replicas": {"static": [{"address": a} for a in static]}}}
    return compile_manifests([Manifest("test", selected), Manifest("test", fixed)])


@pytest.fixture(scope="module")
def router_connection(control_plane: ControlPlane) -> Connection:
    """The credentials a router pod would have: a ServiceAccount bound to list and watch pods in NS, nothing else."""
    plane = control_plane
    plane.kubectl("create", "namespace", NS)
    plane.kubectl("create", "serviceaccount", ROUTER_SA, "-n", NS)
    plane.kubectl("create", "role", ROUTER_SA, "-n", NS, "--verb=list,watch", "--resource=pods")
    plane.kubectl("create", "rolebinding", ROUTER_SA, "-n", NS, f"--role={ROUTER_SA}",
                  f"--serviceaccount={NS}:{ROUTER_SA}")
    return from_kubeconfig(path=str(plane.token_kubeconfig(NS, ROUTER_SA, "router")))


def pod(plane: ControlPlane, name: str, labels: dict[str, str], ip: str, ready: bool) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]}}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    plane.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


@pytest.mark.apiserver
def test_discovery_follows_the_pods_a_pool_selects(control_plane: ControlPlane,
                                                   router_connection: Connection) -> None:
    plane = control_plane
    pod(plane, "m-1", {"app": "m"}, "10.1.0.1", ready=True)
    pod(plane, "m-2", {"app": "m", "llm-d.ai/role": "prefill"}, "10.1.0.2", ready=False)
    pod(plane, "other", {"app": "other"}, "10.1.0.9", ready=True)

    async def story() -> None:
        changes: list[tuple[str, tuple[Replica, ...]]] = []
        discovery = ReplicaDiscovery(KubeApi(router_connection), lambda key, found: changes.append((key, found)))
        config = pools_config({"matchLabels": {"app": "m"}}, ["127.0.0.1:9000"])
        watched, fixed = config.pools[f"{NS}/watched"], config.pools[f"{NS}/fixed"]
        discovery.update(config)
        try:
            assert await discovery.listed()
            assert discovery.replicas(watched) == (Replica("10.1.0.1:8000", Role.BOTH),)
            assert discovery.replicas(fixed) == (Replica("127.0.0.1:9000"),)  # static pools: the config's own
            first = discovery.version(watched.key)

            await asyncio.to_thread(plane.kubectl, "patch", "pod", "m-2", "-n", NS, "--subresource=status",
                                    "--type=merge", "-p", '{"status": {"conditions": [{"type": "Ready", '
                                                          '"status": "True"}]}}')
            await until(lambda: len(discovery.replicas(watched)) == 2)
            assert discovery.replicas(watched) == (Replica("10.1.0.1:8000", Role.BOTH),
                                                   Replica("10.1.0.2:8000", Role.PREFILL))
            assert discovery.version(watched.key) > first

            await asyncio.to_thread(plane.kubectl, "delete", "pod", "m-1", "-n", NS)
            await until(lambda: discovery.replicas(watched) == (Replica("10.1.0.2:8000", Role.PREFILL),))

            # A policy edit that keeps the selector keeps the watch; a new selector watches other pods.
            discovery.update(pools_config({"matchLabels": {"app": "other"}}, ["127.0.0.1:9000"]))
            await until(lambda: discovery.replicas(watched) == (Replica("10.1.0.9:8000", Role.BOTH),))
            assert all(key == watched.key for key, _ in changes)
        finally:
            await discovery.stop()
            await discovery.api.close()

    asyncio.run(story())


@pytest.mark.apiserver
def test_the_bench_meets_the_target(router_connection: Connection, control_plane: ControlPlane,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`switchpoint bench discovery --kubeconfig ... --json` against the session's control plane (the bench plays
    the kubelet too, so it runs as the admin), in the namespace router_connection made."""
    control_plane.install_crds()  # for the baseline (the operator's reconcile pass)
    assert main(["bench", "discovery", "--kubeconfig", str(control_plane.admin_kubeconfig), "--namespace", NS,
                 "--trials", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 4
    assert summary["ready_to_routable_p99_s"] < TARGET_S, summary
    assert summary["gone_to_unroutable_p99_s"] < TARGET_S, summary
    assert 0 < summary["ready_to_routable_p50_s"] <= summary["ready_to_routable_p99_s"], summary
    assert summary["baseline_ready_to_status_p50_s"] > 0, summary
    assert control_plane.get_json("pods", "-n", NS, "-l", "switchpoint.dev/bench-discovery")["items"] == []
    assert control_plane.get_json("routingpolicies,modelpools,configmaps,serviceaccounts,roles", "-n", NS, "-l",
                                  "app.kubernetes.io/managed-by=switchpoint-operator")["items"] == []


@pytest.mark.apiserver
def test_the_bench_starts_its_own_control_plane_without_a_kubeconfig(control_plane: ControlPlane,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """From a fresh clone, no cluster: etcd and kube-apiserver of its own, with the CRDs (so the baseline runs)."""
    assert main(["bench", "discovery", "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ready -> routable" in printed and "ready -> in pool status" in printed, printed
    assert f"target: ready -> routable p99 under {TARGET_S:.0f} s: met" in printed, printed
    assert control_plane.url not in printed  # its own API server, not the session's
