"""The operator's reconcile logic as pure functions: observed namespace state -> objects, statuses, deletions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.config.compiler import load_config
from switchpoint.operator.discovery import discover, selector_matches
from switchpoint.operator.labels import CONFIG_DIGEST, CONFIG_FILE, router_name
from switchpoint.operator.objects import owner_reference
from switchpoint.operator.observed import Observed
from switchpoint.operator.plan import Plan, plan_namespace
from switchpoint.operator.settings import RouterSettings, settings_from_dict
from tests.conftest import EXAMPLES
from tests.operator_support import LARGE, condition, load, model_pod

CLUSTER = EXAMPLES / "cluster"
NOW = "2026-01-01T00:00:00Z"


def with_meta(obj: dict[str, Any], uid: str, age: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].update(uid=uid, generation=3, creationTimestamp=age)
    return out


def example(pools: Path = CLUSTER / "pools.yaml") -> dict[str, list[dict[str, Any]]]:
    return {
        "pools": [with_meta(p, f"pool-{i}") for i, p in enumerate(load(pools))],
        "policies": [with_meta(p, "policy-auto") for p in load(EXAMPLES / "policy.yaml")],
        "budgets": [with_meta(b, f"budget-{i}") for i, b in enumerate(load(EXAMPLES / "budgets.yaml"))],
    }


PODS = [
    model_pod("small-1", "10.0.0.1", {"switchpoint.dev/example-pool": "small-chat"}),
    model_pod("large-p", "10.0.1.1", {"switchpoint.dev/example-pool": "large-reasoning", "llm-d.ai/role": "prefill"}),
    model_pod("large-d", "10.0.1.2", {"switchpoint.dev/example-pool": "large-reasoning", "llm-d.ai/role": "decode"}),
    model_pod("large-x", "10.0.1.3", {"switchpoint.dev/example-pool": "large-reasoning", "llm-d.ai/role": "decode"},
              ready=False),
]


def plan_for(objects: dict[str, list[dict[str, Any]]], pods: list[dict[str, Any]] | None = None,
             settings: RouterSettings | None = None, **extra: Any) -> Plan:
    observed = Observed("default", pods=PODS if pods is None else pods, **objects, **extra)
    return plan_namespace(observed, settings or RouterSettings(), NOW)


def status_of(plan: Plan, name: str) -> dict[str, Any]:
    return next(s.status for s in plan.statuses if s.name == name)


def desired(plan: Plan, kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in plan.apply if o["kind"] == kind and o["metadata"]["name"] == name), None)


def test_accepted_policy_gets_router_objects_with_the_pools_selectors(tmp_path: Path) -> None:
    plan = plan_for(example())
    kinds = [o["kind"] for o in plan.apply]  # in creation order: the routers' identity before their pods
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget"]
    config = desired(plan, "ConfigMap", "auto-router-config")
    assert config is not None
    docs = list(yaml.safe_load_all(config["data"][CONFIG_FILE]))
    large = next(d for d in docs if d["metadata"]["name"] == "large-reasoning")
    written = next(p for p in example()["pools"] if p["metadata"]["name"] == "large-reasoning")
    assert large["spec"]["replicas"] == written["spec"]["replicas"]  # the selector: routers watch the pods
    # The router loads exactly this file: same compiler, same digest as the policy's status says.
    (tmp_path / CONFIG_FILE).write_text(config["data"][CONFIG_FILE])
    routed = load_config([tmp_path])
    assert routed.digest == config["metadata"]["annotations"][CONFIG_DIGEST]
    assert status_of(plan, "auto")["configDigest"] == routed.digest
    assert sorted(b.name for b in routed.budgets) == ["acme-daily-tokens", "per-tenant-monthly-spend",
                                                      "trial-tenant-tokens"]
    for obj in plan.apply:
        assert obj["metadata"]["ownerReferences"] == [owner_reference(example()["policies"][0])]
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "policy-auto"


@pytest.mark.parametrize("pods", [[], PODS[:1], PODS, [model_pod("large-y", "10.0.1.9", LARGE)]],
                         ids=["none", "one", "all", "other"])
def test_pod_churn_changes_no_router_object(pods: list[dict[str, Any]]) -> None:
    """Routers see the pods themselves: what the operator writes for them is the same whatever the pods (only the
    pools' statuses follow them)."""
    assert plan_for(example(), pods=pods).apply == plan_for(example()).apply


def test_a_policy_on_static_pools_gets_no_service_account_and_mounts_no_token() -> None:
    plan = plan_for(example(EXAMPLES / "pools.yaml"), pods=[])
    assert [o["kind"] for o in plan.apply] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    deployment = desired(plan, "Deployment", "auto-router")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod


def test_the_routers_may_list_and_watch_pods_and_nothing_else() -> None:
    plan = plan_for(example())
    account, role, binding = (desired(plan, kind, "auto-router") for kind in ("ServiceAccount", "Role", "RoleBinding"))
    assert account is not None and role is not None and binding is not None
    assert account["automountServiceAccountToken"] is False  # only the router pods ask for the token
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "auto-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "auto-router", "namespace": "default"}]


def test_policy_conditions_and_pool_counts() -> None:
    plan = plan_for(example())
    status = status_of(plan, "auto")
    assert status["observedGeneration"] == 3
    assert condition({"status": status}, "Accepted")["status"] == "True"
    assert condition({"status": status}, "ResolvedRefs")["status"] == "True"
    assert condition({"status": status}, "Conflicted")["status"] == "False"
    ready = condition({"status": status}, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RoutersNotReady")  # no Deployment yet
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == NOW for c in status["conditions"])
    large = status_of(plan, "large-reasoning")
    assert large["readyReplicas"] == 2 and large["replicasByRole"] == {"prefill": 1, "decode": 1}


def test_deployment_runs_the_router_on_the_compiled_config() -> None:
    settings = settings_from_dict({"image": {"reference": "example.org/router:1.2"}, "replicas": 3,
                                   "redis": {"url": "redis://redis:6379/0"}, "otlpEndpoint": "http://otel:4317",
                                   "logLevel": "debug"})
    deployment = desired(plan_for(example(), settings=settings), "Deployment", "auto-router")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    router = pod["containers"][0]
    assert router["image"] == "example.org/router:1.2"
    assert router["args"] == ["--log-level", "debug", "router", "--config", "/etc/switchpoint/config",
                              "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9090",
                              "--otlp-endpoint", "http://otel:4317"]
    assert router["env"] == [{"name": "SWITCHPOINT_REDIS_URL", "value": "redis://redis:6379/0"}]
    assert pod["volumes"][0] == {"name": "config", "configMap": {"name": "auto-router-config"}}
    assert deployment["spec"]["replicas"] == 3
    assert (pod["automountServiceAccountToken"], pod["serviceAccountName"]) == (True, "auto-router")  # it watches pods
    # Hot reload, not a rollout: nothing in the pod template depends on the config.
    assert "annotations" not in deployment["spec"]["template"]["metadata"]


def test_a_config_change_does_not_change_the_pod_template() -> None:
    first = desired(plan_for(example()), "Deployment", "auto-router")
    edited = example()
    edited["policies"][0]["spec"]["default"]["pools"] = [{"pool": "large-reasoning"}]
    second_plan = plan_for(edited)
    assert desired(second_plan, "Deployment", "auto-router") == first
    before = desired(plan_for(example()), "ConfigMap", "auto-router-config")
    after = desired(second_plan, "ConfigMap", "auto-router-config")
    assert before is not None and after is not None
    assert before["metadata"]["annotations"][CONFIG_DIGEST] != after["metadata"]["annotations"][CONFIG_DIGEST]


def test_broken_reference_names_the_field_and_keeps_the_last_config() -> None:
    objects = example()
    objects["policies"][0]["spec"]["decisions"][0]["pools"][0]["pool"] = "huge-reasoning"
    live_config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "auto-router-config", "namespace": "default", "annotations": {CONFIG_DIGEST: "feedfacefeedface"},
        "ownerReferences": [owner_reference(objects["policies"][0])]}, "data": {}}
    plan = plan_for(objects, managed=[live_config])
    status = {"status": status_of(plan, "auto")}
    refs = condition(status, "ResolvedRefs")
    assert (refs["status"], refs["reason"]) == ("False", "PoolNotFound")
    assert refs["message"].startswith("spec.decisions[0].pools[0].pool: unknown ModelPool 'huge-reasoning'")
    assert condition(status, "Accepted")["reason"] == "UnresolvedRefs"
    assert condition(status, "Ready")["reason"] == "NotAccepted"
    assert status["status"]["configDigest"] == "feedfacefeedface"  # what the routers still run
    assert plan.apply == [] and plan.delete == []  # nothing rewritten, nothing removed


def test_cross_namespace_reference() -> None:
    objects = example()
    objects["policies"][0]["spec"]["default"]["pools"] = [{"pool": "other-team/small-chat"}]
    refs = condition({"status": status_of(plan_for(objects), "auto")}, "ResolvedRefs")
    assert refs["reason"] == "CrossNamespaceRef"
    assert refs["message"].startswith("spec.default.pools[0].pool: pool 'other-team/small-chat': a policy may only")


def test_reference_to_an_invalid_pool() -> None:
    objects = example()
    objects["pools"][0]["spec"]["replicas"]["port"] = 0
    plan = plan_for(objects)
    pool = condition({"status": status_of(plan, "small-chat")}, "Accepted")
    assert pool["status"] == "False" and "spec.replicas.port" in pool["message"]
    refs = condition({"status": status_of(plan, "auto")}, "ResolvedRefs")
    assert refs["reason"] == "RefNotAccepted" and "ModelPool 'small-chat' is not accepted" in refs["message"]


def test_conflicting_policies_the_oldest_keeps_the_alias() -> None:
    objects = example()
    newer = copy.deepcopy(objects["policies"][0])
    newer["metadata"].update(name="auto-v2", uid="policy-v2", creationTimestamp="2026-02-01T00:00:00Z")
    objects["policies"].append(newer)
    plan = plan_for(objects)
    old = {"status": status_of(plan, "auto")}
    new = {"status": status_of(plan, "auto-v2")}
    assert condition(old, "Conflicted")["status"] == "False" and condition(old, "Accepted")["status"] == "True"
    conflicted = condition(new, "Conflicted")
    assert (conflicted["status"], conflicted["reason"]) == ("True", "AliasConflict")
    assert "spec.aliases[0]: alias 'auto' is already claimed by RoutingPolicy default/auto" in conflicted["message"]
    assert condition(new, "Accepted")["reason"] == "AliasConflict"
    assert desired(plan, "Deployment", "auto-v2-router") is None


def test_decisions_that_can_never_be_told_apart() -> None:
    objects = example()
    decisions = objects["policies"][0]["spec"]["decisions"]
    decisions.append({**copy.deepcopy(decisions[2]), "name": "coding-again", "priority": 5})
    status = {"status": status_of(plan_for(objects), "auto")}
    conflicted = condition(status, "Conflicted")
    assert (conflicted["status"], conflicted["reason"]) == ("True", "IndistinguishableDecisions")
    assert conflicted["message"].startswith(f"spec.decisions[{len(decisions) - 1}].when: same rule as "
                                            "spec.decisions[2] ('coding', priority 200)")
    assert condition(status, "Accepted")["status"] == "True"  # a warning: the policy still works


def test_pool_selecting_nothing() -> None:
    plan = plan_for(example(), pods=[])
    status = {"status": status_of(plan, "small-chat")}
    refs = condition(status, "ResolvedRefs")
    assert (refs["status"], refs["reason"]) == ("False", "NoPodsSelected")
    assert refs["message"].startswith("spec.replicas.selector {\"matchLabels\"")
    assert condition(status, "Ready")["reason"] == "NoReadyReplicas"
    # The policy is still served: the pool keeps its selector, so routers see no replica there.
    config = desired(plan, "ConfigMap", "auto-router-config")
    assert config is not None and "selector" in config["data"][CONFIG_FILE]


def test_autoscaling_annotations_make_an_hpa_and_free_the_replica_count() -> None:
    objects = example()
    objects["policies"][0]["metadata"]["annotations"] = {"switchpoint.dev/router-min-replicas": "2",
                                                          "switchpoint.dev/router-max-replicas": "8"}
    plan = plan_for(objects)
    hpa = desired(plan, "HorizontalPodAutoscaler", "auto-router")
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    deployment = desired(plan, "Deployment", "auto-router")
    assert deployment is not None and "replicas" not in deployment["spec"]


def test_bad_annotation_is_named() -> None:
    objects = example()
    objects["policies"][0]["metadata"]["annotations"] = {"switchpoint.dev/router-replicas": "many"}
    accepted = condition({"status": status_of(plan_for(objects), "auto")}, "Accepted")
    assert accepted["reason"] == "Invalid"
    assert accepted["message"] == "metadata.annotations[switchpoint.dev/router-replicas]: 'many' is not a whole " \
                                  "number in 1..1000"


def test_objects_of_a_deleted_policy_are_deleted() -> None:
    objects = example()
    policy = objects["policies"].pop()
    live = [dict(o, metadata={**o["metadata"]}) for o in plan_for(example()).apply]
    plan = plan_for(objects, managed=live)
    assert sorted(r.kind for r in plan.delete) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Role",
                                                   "RoleBinding", "Service", "ServiceAccount"]
    assert all(r.name.startswith(router_name(policy["metadata"]["name"])) for r in plan.delete)


def test_unchanged_status_is_not_written_again() -> None:
    first = plan_for(example())
    objects = example()
    for body in (*objects["pools"], *objects["policies"], *objects["budgets"]):
        body["status"] = status_of(first, body["metadata"]["name"])
    assert plan_for(objects).statuses == []


def test_budget_status() -> None:
    objects = example()
    objects["budgets"][1]["spec"]["onExhausted"]["downgradeTo"] = "tiny-chat"
    plan = plan_for(objects)
    broken = {"status": status_of(plan, "per-tenant-monthly-spend")}
    refs = condition(broken, "ResolvedRefs")
    assert refs["reason"] == "PoolNotFound" and refs["message"].startswith("spec.onExhausted.downgradeTo:")
    assert condition(broken, "Ready")["reason"] == "NotEnforced"
    ready = condition({"status": status_of(plan, "acme-daily-tokens")}, "Ready")
    assert ready["status"] == "True" and "RoutingPolicy auto" in ready["message"]


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
])
def test_selector_semantics(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


def test_discovery_roles_readiness_and_ipv6() -> None:
    pods = [
        model_pod("a", "fd00::1", {"p": "x"}),
        model_pod("b", "10.0.0.2", {"p": "x", "role": "prefill-decode"}),
        model_pod("c", "10.0.0.3", {"p": "x", "role": "encode"}),
        model_pod("d", "10.0.0.4", {"p": "x"}, ready=False),
        {**model_pod("e", "10.0.0.5", {"p": "x"}), "metadata": {"name": "e", "labels": {"p": "x"},
                                                                 "deletionTimestamp": NOW}},
        model_pod("f", "10.0.0.6", {"p": "y"}),
    ]
    found = discover({"selector": {"matchLabels": {"p": "x"}}, "port": 8000, "roleLabel": "role"}, pods)
    assert found.selected == 5
    assert [(r.address, r.role) for r in found.ready] == [("10.0.0.2:8000", "both"), ("[fd00::1]:8000", "both")]
    assert found.unknown_roles == ("c=encode",)
