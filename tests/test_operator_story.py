"""The operator against a Kubernetes API stand-in (kmock), following a user's story.

kopf watches kmock; the operator writes router objects and statuses into it. The
test plays the user (apply, edit, delete) and the controllers it needs (pods
turning ready, the Deployment reporting ready routers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.config.compiler import load_config
from switchpoint.operator.kube import (
    AUTOSCALERS,
    CONFIG_MAPS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    OWNED,
    PODS,
    POLICIES,
    POOLS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
)
from switchpoint.operator.labels import CONFIG_DIGEST, CONFIG_FILE
from tests.conftest import EXAMPLES
from tests.operator_support import Cluster, apply_examples, condition, eventually, key, load, running_operator


def config_docs(config_map: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    assert config_map is not None
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(config_map["data"][CONFIG_FILE])}


def digest_of(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("annotations", {}).get(CONFIG_DIGEST)


async def policy_condition(cluster: Cluster, kind: str, name: str = "auto") -> dict[str, Any]:
    return condition(await cluster.get(POLICIES, "default", name), kind)


async def router_objects(cluster: Cluster) -> list[tuple[str, str]]:
    found = []
    for resource in OWNED:
        found += [(resource.kind, o["metadata"]["name"]) for o in await cluster.list(resource)]
    return sorted(found)


def test_user_story(tmp_path: Path) -> None:
    asyncio.run(user_story(tmp_path))


async def user_story(tmp_path: Path) -> None:
    async with Cluster() as cluster, running_operator(cluster.url):
        # 1. Apply pools, a policy and budgets: the routers' identity, Deployment, Service, config and PDB appear.
        policy = await apply_examples(cluster)
        config = await eventually(lambda: cluster.get(CONFIG_MAPS, "default", "auto-router-config"), what="config")
        docs = config_docs(config)
        for pool in load(EXAMPLES / "cluster" / "pools.yaml"):  # selectors as written: the routers watch the pods
            assert docs[pool["metadata"]["name"]]["spec"]["replicas"] == pool["spec"]["replicas"]
        (tmp_path / CONFIG_FILE).write_text(config["data"][CONFIG_FILE])
        assert load_config([tmp_path]).digest == digest_of(config)  # what the router will load and report
        deployment = await eventually(lambda: cluster.get(DEPLOYMENTS, "default", "auto-router"))
        service = await eventually(lambda: cluster.get(SERVICES, "default", "auto-router"))
        assert await eventually(lambda: cluster.get(DISRUPTION_BUDGETS, "default", "auto-router"))
        assert [p["port"] for p in service["spec"]["ports"]] == [50051, 9090]
        assert deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "auto-router-config"
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "auto-router"
        account = await eventually(lambda: cluster.get(SERVICE_ACCOUNTS, "default", "auto-router"))
        assert await eventually(lambda: cluster.get(ROLE_BINDINGS, "default", "auto-router"))
        for obj in (config, deployment, service, account):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == policy["metadata"]["uid"]
        await eventually(lambda: _status_is(cluster, "auto", "Accepted", "True"), what="Accepted")
        live = await cluster.get(POLICIES, "default", "auto")
        assert live["status"]["configDigest"] == digest_of(config)
        assert condition(live, "Ready")["reason"] == "RoutersNotReady"
        # The pods may come after the first pass: wait for the pass that saw them.
        pool = await eventually(lambda: _pool_ready(cluster, "large-reasoning", 2), what="2 ready in the pool status")
        assert pool["status"]["replicasByRole"] == {"prefill": 1, "decode": 1}

        # 2. The Deployment controller reports ready routers: the policy is Ready and shows them.
        await cluster.call("PATCH", DEPLOYMENTS.path("default", "auto-router", "status"),
                           {"status": {"readyReplicas": 2, "replicas": 2}})
        await eventually(lambda: _status_is(cluster, "auto", "Ready", "True"), what="Ready")
        assert (await cluster.get(POLICIES, "default", "auto"))["status"]["readyRouters"] == 2

        # 3. A model-server pod becomes ready: the pool's status counts it within 2 s; the routers' config is not
        # rewritten (the routers watch the pods themselves).
        before = await cluster.get(CONFIG_MAPS, "default", "auto-router-config")
        started = time.monotonic()
        await cluster.call("PATCH", PODS.path("default", "large-x"),
                           {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        await eventually(lambda: _pool_ready(cluster, "large-reasoning", 3), what="3 ready in the pool status")
        assert time.monotonic() - started < 2.0
        assert await cluster.get(CONFIG_MAPS, "default", "auto-router-config") == before

        # 4. Router pods are nudged (annotated with the digest) so the kubelet refreshes their volume now after an edit.
        await cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "auto-router-abc", "namespace": "default",
            "labels": {"app.kubernetes.io/name": "switchpoint-router", "app.kubernetes.io/instance": "auto"}}})
        current = digest_of(await cluster.get(CONFIG_MAPS, "default", "auto-router-config"))
        await eventually(lambda: _pod_digest_is(cluster, "auto-router-abc", current), what="nudge")

        # 5. Edit the policy: the routers get a new config; the Deployment is not rolled (hot reload).
        template = (await cluster.get(DEPLOYMENTS, "default", "auto-router"))["spec"]["template"]
        edited = load(EXAMPLES / "policy.yaml")[0]
        edited["spec"]["default"]["pools"] = [{"pool": "large-reasoning"}]
        await cluster.replace_spec(edited)
        await eventually(lambda: _config_default_is(cluster, "large-reasoning"), what="edited config")
        assert (await cluster.get(DEPLOYMENTS, "default", "auto-router"))["spec"]["template"] == template
        new_digest = digest_of(await cluster.get(CONFIG_MAPS, "default", "auto-router-config"))
        await eventually(lambda: _pod_digest_is(cluster, "auto-router-abc", new_digest), what="nudge after edit")

        # 6. Break a reference: the condition names the field; the routers keep the last accepted config.
        broken = load(EXAMPLES / "policy.yaml")[0]
        broken["spec"]["decisions"][0]["pools"][0]["pool"] = "huge-reasoning"
        await cluster.replace_spec(broken)
        await eventually(lambda: _status_is(cluster, "auto", "ResolvedRefs", "False"), what="ResolvedRefs False")
        live = await cluster.get(POLICIES, "default", "auto")
        refs = condition(live, "ResolvedRefs")
        assert refs["reason"] == "PoolNotFound"
        assert refs["message"].startswith("spec.decisions[0].pools[0].pool: unknown ModelPool 'huge-reasoning'")
        assert refs["observedGeneration"] == live["metadata"]["generation"]
        assert digest_of(await cluster.get(CONFIG_MAPS, "default", "auto-router-config")) == new_digest
        assert live["status"]["configDigest"] == new_digest

        # 7. Delete the policy: everything it owned is gone.
        await cluster.delete(POLICIES, "default", "auto")
        await eventually(lambda: _none_left(cluster), what="owned objects deleted")


async def _status_is(cluster: Cluster, name: str, kind: str, value: str) -> bool:
    return condition(await cluster.get(POLICIES, "default", name), kind).get("status") == value


async def _pool_ready(cluster: Cluster, name: str, ready: int) -> dict[str, Any] | None:
    pool = await cluster.get(POOLS, "default", name)
    return pool if ((pool or {}).get("status") or {}).get("readyReplicas") == ready else None


async def _config_default_is(cluster: Cluster, pool: str) -> bool:
    docs = config_docs(await cluster.get(CONFIG_MAPS, "default", "auto-router-config"))
    return docs["auto"]["spec"]["default"]["pools"] == [{"pool": pool}]


async def _pod_digest_is(cluster: Cluster, pod: str, digest: str | None) -> bool:
    return digest is not None and digest_of(await cluster.get(PODS, "default", pod)) == digest


async def _none_left(cluster: Cluster) -> bool:
    return await router_objects(cluster) == []


def test_restart_midway_converges_without_duplicates() -> None:
    asyncio.run(restart_midway())


async def restart_midway() -> None:
    async with Cluster() as cluster:
        async with running_operator(cluster.url):
            await apply_examples(cluster)
            # Stop as soon as the first object is written: the rest of the pass never happens.
            await eventually(lambda: cluster.get(CONFIG_MAPS, "default", "auto-router-config"), what="first write")
        # While no operator runs, the user edits the policy and turns autoscaling on.
        edited = load(EXAMPLES / "policy.yaml")[0]
        edited["metadata"]["annotations"] = {"switchpoint.dev/router-max-replicas": "6"}
        edited["spec"]["default"]["pools"] = [{"pool": "large-reasoning"}]
        await cluster.replace_spec(edited)
        async with running_operator(cluster.url):
            await eventually(lambda: cluster.get(AUTOSCALERS, "default", "auto-router"), what="HPA")
            await eventually(lambda: _config_default_is(cluster, "large-reasoning"), what="edited config")
            await eventually(lambda: _status_is(cluster, "auto", "Accepted", "True"))
            assert await router_objects(cluster) == [
                ("ConfigMap", "auto-router-config"), ("Deployment", "auto-router"),
                ("HorizontalPodAutoscaler", "auto-router"), ("PodDisruptionBudget", "auto-router"),
                ("Role", "auto-router"), ("RoleBinding", "auto-router"), ("Service", "auto-router"),
                ("ServiceAccount", "auto-router")]
        # A third start finds nothing to change: no create, no patch of router objects.
        writes_before = _writes(cluster)
        assert writes_before >= 5
        async with running_operator(cluster.url):
            await asyncio.sleep(1.5)
        assert _writes(cluster) == writes_before


def _writes(cluster: Cluster) -> int:
    """Versions of router objects the API has stored (each create and each patch adds one)."""
    owned = {key(r) for r in OWNED}
    return sum(len(obj.history) for (resource, _, _), obj in cluster.emulator.objects.items()
               if key(resource) in owned)


def test_missing_crds_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    asyncio.run(missing_crds())
    assert "the switchpoint.dev/v1alpha1 CRDs for modelpools, routingpolicies, budgets are not installed" in caplog.text


async def missing_crds() -> None:
    async with Cluster(with_crds=False) as cluster, running_operator(cluster.url):
        await asyncio.sleep(0.5)
        await cluster.install_crds()  # kopf notices the new CRDs and starts watching them
        await apply_examples(cluster)
        await eventually(lambda: cluster.get(DEPLOYMENTS, "default", "auto-router"), timeout=15, what="routers")
