"""The operator, run locally as `switchpoint operator` with the token of the chart's ServiceAccount, against a real
kube-apiserver: it reconciles the cluster examples into router objects and statuses, the API server validating
every object it writes and authorising every call against the chart's RBAC.

The chart is installed with operator.watchNamespaces (Roles, the narrowest RBAC it offers) and nudgeRouterPods on,
and its ValidatingAdmissionPolicy is in force before the operator starts, so every write passes it too (the
routers' Role and RoleBinding as well: the API server lets the operator grant only what it holds itself).
No controllers run: the test plays the kubelet (pod status) where the story needs it; the operator itself deletes
what a deleted policy owned (there is no garbage collector here, so nothing else could).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.config.compiler import load_config
from switchpoint.operator.labels import CONFIG_DIGEST, CONFIG_FILE, MANAGED_BY, MANAGER
from tests.apiserver_support import BIN, ControlPlane, eventually, grants
from tests.conftest import EXAMPLES, ROOT
from tests.operator_support import LARGE, load

pytestmark = pytest.mark.apiserver

RELEASE, SYSTEM = "op", "op-system"
STORY, RESTART = "shop-a", "shop-b"
OWNED_KINDS = ("serviceaccounts,roles,rolebindings,configmaps,services,deployments,poddisruptionbudgets,"
               "horizontalpodautoscalers")
FORBIDDEN = (": 403 ", "Forbidden", "forbidden", "Not enough permissions")


class OperatorProcess:
    """`switchpoint operator` as the chart runs it (its args), authenticated by a kubeconfig holding a token."""

    def __init__(self, kubeconfig: Path, settings: Path, namespaces: tuple[str, ...], log: Path):
        self.command = [str(BIN / "switchpoint"), "--log-level", "info", "operator", "--router-settings",
                        str(settings), "--resync-seconds", "30", "--debounce-seconds", "0.05", "--liveness", "",
                        *(arg for ns in namespaces for arg in ("--namespace", ns))]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Env:
    plane: ControlPlane
    operator: OperatorProcess


def namespaced(docs: list[dict[str, Any]], namespace: str) -> str:
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(docs)


def apply_examples(plane: ControlPlane, namespace: str) -> None:
    """The user's `kubectl apply` of the cluster pools, the policy and the budgets, in `namespace`."""
    docs = [*load(EXAMPLES / "cluster" / "pools.yaml"), *load(EXAMPLES / "policy.yaml"),
            *load(EXAMPLES / "budgets.yaml")]
    plane.kubectl("apply", "-f", "-", stdin=namespaced(docs, namespace))


def model_pod(plane: ControlPlane, namespace: str, name: str, ip: str, labels: dict[str, str],
              ready: bool = True) -> None:
    """A model-server pod, and the status its kubelet would report."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]}}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
    set_ready(plane, namespace, name, ready, ip)


def set_ready(plane: ControlPlane, namespace: str, name: str, ready: bool, ip: str | None = None) -> None:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}])
    plane.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))


def managed(plane: ControlPlane, namespace: str) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, name) -> uid and resourceVersion of every router object the operator owns in `namespace`."""
    items = plane.get_json(OWNED_KINDS, "-n", namespace, "-l", f"{MANAGED_BY}={MANAGER}")["items"]
    return {(o["kind"], o["metadata"]["name"]): {"uid": o["metadata"]["uid"],
                                                 "version": o["metadata"]["resourceVersion"]} for o in items}


State = tuple[dict[tuple[str, str], dict[str, str]], dict[str, str]]
STATUSES = ("routingpolicy/auto", "modelpool/small-chat", "modelpool/large-reasoning", "budget/acme-daily-tokens")


def state(plane: ControlPlane, namespace: str) -> State:
    """The router objects' versions, and the resourceVersions of the examples (which change with their status)."""
    return managed(plane, namespace), {k: plane.get_json(k, "-n", namespace)["metadata"]["resourceVersion"]
                                       for k in STATUSES}


def settled(plane: ControlPlane, namespace: str) -> State:
    """The state once the operator has nothing left to write (unchanged over half a second)."""
    def unchanged() -> State | None:
        first = state(plane, namespace)
        time.sleep(0.5)
        return first if state(plane, namespace) == first else None
    return eventually(unchanged, what=f"the operator idle in {namespace}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def config_docs(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    data = plane.get_json("configmap", "auto-router-config", "-n", namespace)["data"][CONFIG_FILE]
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(data)}


def ready_replicas(plane: ControlPlane, namespace: str, pool: str) -> int | None:
    return (plane.get_json("modelpool", pool, "-n", namespace).get("status") or {}).get("readyReplicas")


@pytest.fixture(scope="module")
def env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    plane = control_plane
    plane.install_crds()  # helm installs them too; served before the operator starts, so its first list succeeds
    for namespace in (STORY, RESTART):
        plane.kubectl("create", "namespace", namespace)
    plane.helm("install", RELEASE, str(ROOT / "charts" / "switchpoint"), "--namespace", SYSTEM, "--create-namespace",
               "--set", f"operator.watchNamespaces={{{STORY},{RESTART}}}")
    work = tmp_path_factory.mktemp("operator")
    settings = work / "router-settings.yaml"  # what the operator's pod mounts from the chart's ConfigMap
    settings.write_text(plane.get_json("configmap", f"{RELEASE}-switchpoint-router-settings", "-n", SYSTEM)
                        ["data"]["router-settings.yaml"])
    plane.await_operator_policy(f"system:serviceaccount:{SYSTEM}:{RELEASE}-switchpoint", STORY)  # every write checked
    kubeconfig = plane.token_kubeconfig(SYSTEM, f"{RELEASE}-switchpoint", "operator")
    operator = OperatorProcess(kubeconfig, settings, (STORY, RESTART), work / "operator.log")
    operator.start()
    try:
        yield Env(plane, operator)
    finally:
        if operator.proc is not None:
            operator.stop()
        plane.helm("uninstall", RELEASE, "--namespace", SYSTEM)


def test_the_operator_reconciles_the_examples_with_the_charts_rbac(env: Env, tmp_path: Path) -> None:
    plane, ns = env.plane, STORY
    apply_examples(plane, ns)
    model_pod(plane, ns, "small-1", "10.0.0.1", {"switchpoint.dev/example-pool": "small-chat"})
    model_pod(plane, ns, "large-p", "10.0.1.1", {**LARGE, "llm-d.ai/role": "prefill"})
    model_pod(plane, ns, "large-d", "10.0.1.2", {**LARGE, "llm-d.ai/role": "decode"})
    model_pod(plane, ns, "large-x", "10.0.1.3", {**LARGE, "llm-d.ai/role": "decode"}, ready=False)

    # Router objects, stored by the API server (so valid to it), owned by the policy.
    eventually(lambda: len(managed(plane, ns)) == 7, what="identity, ConfigMap, Deployment, Service and PDB")
    eventually(lambda: ready_replicas(plane, ns, "large-reasoning") == 2, what="the ready pods in the pool status")
    settled(plane, ns)
    assert sorted(managed(plane, ns)) == [("ConfigMap", "auto-router-config"), ("Deployment", "auto-router"),
                                          ("PodDisruptionBudget", "auto-router"), ("Role", "auto-router"),
                                          ("RoleBinding", "auto-router"), ("Service", "auto-router"),
                                          ("ServiceAccount", "auto-router")]
    policy = plane.get_json("routingpolicy", "auto", "-n", ns)
    for kind in ("configmap/auto-router-config", "deployment/auto-router", "service/auto-router"):
        owner = plane.get_json(kind, "-n", ns)["metadata"]["ownerReferences"][0]
        assert owner["uid"] == policy["metadata"]["uid"] and owner["blockOwnerDeletion"] is True
    service = plane.get_json("service", "auto-router", "-n", ns)
    assert service["spec"]["clusterIP"]  # allocated by the API server
    # The routers get the pools as written, selectors and all: they watch the pods themselves, as the
    # ServiceAccount the operator made for them, which may list and watch pods here and nothing else.
    docs = config_docs(plane, ns)
    for pool in ("small-chat", "large-reasoning"):
        live = plane.get_json("modelpool", pool, "-n", ns)["spec"]["replicas"]
        assert "selector" in live and docs[pool]["spec"]["replicas"] == live
    pod_spec = plane.get_json("deployment", "auto-router", "-n", ns)["spec"]["template"]["spec"]
    assert (pod_spec["serviceAccountName"], pod_spec["automountServiceAccountToken"]) == ("auto-router", True)
    assert grants(plane, f"system:serviceaccount:{ns}:auto-router", ns) == {("list", "pods"), ("watch", "pods")}
    assert grants(plane, f"system:serviceaccount:{ns}:auto-router", RESTART) == set()
    config_map = plane.get_json("configmap", "auto-router-config", "-n", ns)
    (tmp_path / CONFIG_FILE).write_text(config_map["data"][CONFIG_FILE])
    digest = config_map["metadata"]["annotations"][CONFIG_DIGEST]
    assert load_config([tmp_path]).digest == digest  # what a router would load and report

    # Statuses, through the status subresource.
    def policy_accepted() -> dict[str, Any] | None:
        live = plane.get_json("routingpolicy", "auto", "-n", ns)
        return live if condition(live, "Accepted").get("status") == "True" else None
    live = eventually(policy_accepted, what="Accepted")
    assert live["status"]["configDigest"] == digest
    assert condition(live, "Ready")["reason"] == "RoutersNotReady"  # no kubelet: the routers never start
    assert condition(live, "Accepted")["observedGeneration"] == live["metadata"]["generation"]
    pool = eventually(lambda: plane.get_json("modelpool", "large-reasoning", "-n", ns).get("status"), what="pool")
    assert pool["readyReplicas"] == 2 and pool["replicasByRole"] == {"prefill": 1, "decode": 1}
    table = plane.kubectl("get", "routingpolicies,modelpools", "-n", ns).stdout
    assert all(line.split()[-2] == "True" for line in table.splitlines() if line.startswith(("routing", "modelpool")))

    # The kubelet reports another replica ready: the pool's status counts it within 2 s, and the routers' config
    # is not rewritten (they see the pod themselves).
    config_version = config_map["metadata"]["resourceVersion"]
    started = time.monotonic()
    set_ready(plane, ns, "large-x", True)
    eventually(lambda: ready_replicas(plane, ns, "large-reasoning") == 3, what="the new replica in the pool status")
    assert time.monotonic() - started < 2.0
    settled(plane, ns)
    assert plane.get_json("configmap", "auto-router-config", "-n", ns)["metadata"]["resourceVersion"] == \
        config_version

    # A router pod is annotated with the config's digest (nudgeRouterPods: patch on pods in the watched namespace;
    # after a policy edit, the kubelet then refreshes the mounted config at once).
    labels = {"app.kubernetes.io/name": "switchpoint-router", "app.kubernetes.io/instance": "auto"}
    router_pod = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "auto-router-abc", "namespace": ns, "labels": labels},
                  "spec": {"containers": [{"name": "router", "image": "ghcr.io/switchpoint/router:0.1.0"}]}}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(router_pod))
    current = plane.get_json("configmap", "auto-router-config", "-n", ns)["metadata"]["annotations"][CONFIG_DIGEST]
    eventually(lambda: (plane.get_json("pod", "auto-router-abc", "-n", ns)["metadata"].get("annotations") or {})
               .get(CONFIG_DIGEST) == current, what="router pod nudged")

    # Deleting the policy: the operator deletes what it owned.
    plane.kubectl("delete", "routingpolicy", "auto", "-n", ns)
    eventually(lambda: managed(plane, ns) == {}, what="owned objects deleted")
    assert not [line for line in env.operator.text().splitlines() if any(word in line for word in FORBIDDEN)]


def test_a_restarted_operator_converges_without_duplicates_or_writes(env: Env) -> None:
    plane, ns = env.plane, RESTART
    apply_examples(plane, ns)
    model_pod(plane, ns, "small-1", "10.0.0.1", {"switchpoint.dev/example-pool": "small-chat"})
    eventually(lambda: len(managed(plane, ns)) == 7, what="router objects")
    eventually(lambda: ready_replicas(plane, ns, "small-chat") == 1, what="the replica in the pool status")
    eventually(lambda: condition(plane.get_json("routingpolicy", "auto", "-n", ns), "Accepted"), what="status")
    before, versions = settled(plane, ns)

    env.operator.stop()
    plane.kubectl("delete", "service", "auto-router", "-n", ns)  # while no operator runs
    env.operator.start()
    eventually(lambda: ("Service", "auto-router") in managed(plane, ns), what="Service recreated after the restart")

    after = managed(plane, ns)
    assert sorted(after) == sorted(before)  # one of each, no duplicates
    assert after.pop(("Service", "auto-router"))["uid"] != before.pop(("Service", "auto-router"))["uid"]
    assert after == before  # the other objects were not written again
    assert state(plane, ns)[1] == versions  # nor the statuses
    assert not [line for line in env.operator.text().splitlines() if any(word in line for word in FORBIDDEN)]
