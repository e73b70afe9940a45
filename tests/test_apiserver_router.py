"""A router process (`switchpoint router`) that discovers its replicas by watching pods, end to end against a real
kube-apiserver, with the credentials the operator gives a policy's routers: the token of the `<policy>-router`
ServiceAccount, bound to the operator's Role for it (operator/objects.py). The test plays the kubelet (pod status).

- least privilege: that ServiceAccount may list and watch pods in its namespace, and nothing else anywhere;
- a pod of the selector pool is routed to within 2 s of turning Ready, and no longer once it is deleted;
- a router on a selector pool without credentials refuses to start, naming the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from switchpoint.config.manifests import API_VERSION
from switchpoint.localproc import RouterProcess
from switchpoint.operator.objects import role, role_binding, service_account
from switchpoint.v1 import router_pb2_grpc
from tests.apiserver_support import ControlPlane, can_i, grants
from tests.conftest import ThreadedRouter, chat, wait_for

pytestmark = pytest.mark.apiserver

NS = "router-e2e"
POLICY = "e2e"
ROUTER_USER = f"system:serviceaccount:{NS}:{POLICY}-router"
MODEL_LABELS = {"app": "e2e-model"}
FALLBACK = "127.0.0.1:9"  # a static pool the policy falls back to while the watched one has no ready replica
TARGET_S = 2.0  # issue 16: a pod's Ready transition reaches routing in under 2 s


def manifests() -> list[dict[str, Any]]:
    def pool(name: str, replicas: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": name, "namespace": NS},
                "spec": {"models": [{"name": "m"}], "replicas": replicas}}
    policy = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": POLICY, "namespace": NS},
              "spec": {"aliases": [POLICY], "default": {"pools": [{"pool": "watched"}, {"pool": "fallback"}]}}}
    return [pool("watched", {"selector": {"matchLabels": MODEL_LABELS}, "port": 8000}),
            pool("fallback", {"static": [{"address": FALLBACK}]}), policy]


@pytest.fixture(scope="module")
def router_env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(config dir, kubeconfig): the policy's manifests as the router loads them, and the token of the
    ServiceAccount the operator makes for the policy's routers, with the operator's Role and RoleBinding."""
    plane = control_plane
    plane.install_crds()
    plane.kubectl("create", "namespace", NS)
    docs = manifests()
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    policy = plane.get_json("routingpolicy", POLICY, "-n", NS)
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([service_account(policy), role(policy),
                                                                 role_binding(policy)]))
    work = tmp_path_factory.mktemp("router-e2e")
    config = work / "config"
    config.mkdir()
    (config / "switchpoint.yaml").write_text(yaml.safe_dump_all(docs))
    yield config, plane.token_kubeconfig(NS, f"{POLICY}-router", "router-e2e")
    plane.kubectl("delete", "namespace", NS, "--wait=false")


def test_the_routers_service_account_may_list_and_watch_pods_in_its_namespace_only(
        control_plane: ControlPlane, router_env: tuple[Path, Path]) -> None:
    plane = control_plane
    assert grants(plane, ROUTER_USER, NS) == {("list", "pods"), ("watch", "pods")}
    assert grants(plane, ROUTER_USER, "default") == set()
    assert not can_i(plane, ROUTER_USER, "list", "pods", "*")
    assert not can_i(plane, ROUTER_USER, "get", "pods", NS)
    assert not can_i(plane, ROUTER_USER, "patch", "pods", NS)
    assert not can_i(plane, ROUTER_USER, "list", "endpointslices.discovery.k8s.io", NS)
    assert not can_i(plane, ROUTER_USER, "get", "configmaps", NS)
    assert not can_i(plane, ROUTER_USER, "get", "secrets", NS)


def kubelet(plane: ControlPlane, name: str, ip: str, ready: bool) -> None:
    status: dict[str, Any] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    plane.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))


def picked(stub: router_pb2_grpc.RouterStub) -> str:
    return stub.Route(chat("hello", model=POLICY), timeout=5).replica


def until_picked(stub: router_pb2_grpc.RouterStub, want: bool, address: str, timeout_s: float = 10.0) -> float:
    """Route until the pick is (or, want=False, is no longer) `address`; the time that took."""
    started = time.monotonic()
    while (picked(stub) == address) != want:
        assert time.monotonic() - started < timeout_s, f"{address} {'never' if want else 'still'} picked"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_router_routes_to_a_pod_within_2_s_of_ready_and_not_after_its_deletion(
        control_plane: ControlPlane, router_env: tuple[Path, Path]) -> None:
    plane, (config, kubeconfig) = control_plane, router_env
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "model-0", "namespace": NS, "labels": MODEL_LABELS},
           "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]}}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
    kubelet(plane, "model-0", "10.9.0.1", ready=False)
    address = "10.9.0.1:8000"
    with RouterProcess([config], metrics=False, extra=["--kubeconfig", str(kubeconfig)]) as router, \
            grpc.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        assert picked(stub) == FALLBACK  # listed before serving: the pod is there, not ready
        started = time.monotonic()
        kubelet(plane, "model-0", "10.9.0.1", ready=True)
        until_picked(stub, True, address)
        ready_to_routable = time.monotonic() - started  # includes kubectl's own start-up
        assert ready_to_routable < TARGET_S, ready_to_routable

        started = time.monotonic()
        plane.kubectl("delete", "pod", "model-0", "-n", NS, "--wait=false")
        until_picked(stub, False, address)
        assert time.monotonic() - started < TARGET_S
        assert picked(stub) == FALLBACK


def test_a_router_on_a_selector_pool_without_credentials_does_not_start(router_env: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    config, _ = router_env
    missing = tmp_path / "no-such.kubeconfig"
    done = subprocess.run([sys.executable, "-m", "switchpoint.cli", "router", "--config", str(config), "--port", "0",
                           "--kubeconfig", str(missing)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"no Kubernetes credentials: --kubeconfig {missing}" in done.stderr, done.stderr[-2000:]


def test_local_mode_on_static_pools_never_connects_and_a_reload_without_credentials_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No control plane here: a router on static pools makes no Kubernetes client, even with --kubeconfig; a reload
    that brings a selector pool it cannot watch is refused, naming the cause, and the static config keeps serving."""
    watched, fallback, policy = manifests()
    static_policy = {**policy, "spec": {"aliases": [POLICY], "default": {"pools": [{"pool": "fallback"}]}}}
    config = tmp_path / "config"
    config.mkdir()
    (config / "switchpoint.yaml").write_text(yaml.safe_dump_all([fallback, static_policy]))
    with ThreadedRouter(config_paths=[config], reload_interval=0.05,
                        kubeconfig=str(tmp_path / "no-such.kubeconfig")) as router:
        assert not router.server.discovery.connected
        digest = router.server.config.digest
        assert router.stub.Route(chat("hello", model=POLICY), timeout=5).replica == FALLBACK
        (config / "switchpoint.yaml").write_text(yaml.safe_dump_all([watched, fallback, policy]))
        assert wait_for(lambda: 'switchpoint_config_reloads_total{result="refused"} 1.0' in router.metrics_text())
        assert router.server.config.digest == digest and not router.server.discovery.connected
        assert "config reload refused; the previous config keeps serving: a pool selects pods" in caplog.text
        assert "no Kubernetes credentials: --kubeconfig" in caplog.text
        assert router.stub.Route(chat("hello", model=POLICY), timeout=5).replica == FALLBACK
