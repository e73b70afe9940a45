"""The Helm chart, with the real helm binary: lint, render with default and other values, validate every
object against the Kubernetes schemas, and check the chart against the operator and the CRDs it ships."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from switchpoint.config import schema
from switchpoint.operator.labels import CONFIG_FILE
from switchpoint.operator.observed import Observed
from switchpoint.operator.plan import plan_namespace
from switchpoint.operator.settings import settings_from_dict
from tests.conftest import EXAMPLES, ROOT
from tests.operator_support import load

CHART = ROOT / "charts" / "switchpoint"
HELM = ROOT / ".venv" / "bin" / "helm"
K8S_VERSION = "1.37.0"
NAMESPACE = "switchpoint-system"
OTHER_VALUES = {
    "image": {"repository": "registry.example/sp/operator", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "regcred"}],
    "logLevel": "debug",
    "operator": {"watchNamespaces": ["llm-a", "llm-b"], "nudgeRouterPods": False, "resyncSeconds": 30,
                 "nodeSelector": {"kubernetes.io/os": "linux"}},
    "serviceAccount": {"name": "switchpoint-op", "annotations": {"example.com/role": "x"}},
    "router": {"image": {"repository": "registry.example/sp/router", "tag": "1.2.3"}, "replicas": 3,
               "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
               "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}, "logLevel": "warning"},
    "redis": {"bundled": {"enabled": True}},
    "otlp": {"endpoint": "http://otel-collector.observability:4317"},
}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make test installs it)")


def helm(*args: str) -> str:
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(tmp_path: Path, values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "sp", str(CHART), "--namespace", NAMESPACE, "--include-crds", *extra]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def router_settings(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", "sp-switchpoint-router-settings")[0]
    return yaml.safe_load(config_map["data"]["router-settings.yaml"])


def test_lint() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "redis.bundled.enabled=true,operator.watchNamespaces={a,b}")


def test_chart_crds_are_the_crds(tmp_path: Path) -> None:
    """crds/ is the single source; the chart carries copies (Helm packages and OCI pushes do not follow
    symlinks out of the chart). Refresh them with: cp crds/*.yaml charts/switchpoint/crds/"""
    source = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == source
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    rendered = find(render(tmp_path), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in rendered) == [
        "budgets.switchpoint.dev", "modelpools.switchpoint.dev", "routingpolicies.switchpoint.dev"]


@pytest.mark.parametrize("values", [None, OTHER_VALUES], ids=["defaults", "other-values"])
def test_every_rendered_object_is_valid(tmp_path: Path, values: dict[str, Any] | None) -> None:
    objects = render(tmp_path, values)
    assert len(objects) >= 8
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_defaults(tmp_path: Path) -> None:
    objects = render(tmp_path)
    operator = find(objects, "Deployment", "sp-switchpoint-operator")[0]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/switchpoint/operator:0.1.0"
    assert container["args"][:6] == ["--log-level", "info", "operator", "--router-settings",
                                     "/etc/switchpoint/router-settings.yaml", "--resync-seconds"]
    assert "--namespace" not in container["args"] and "--no-nudge" not in container["args"]
    assert operator["spec"]["strategy"] == {"type": "Recreate"} and operator["spec"]["replicas"] == 1
    assert find(objects, "ClusterRole") and not find(objects, "Role")
    assert not find(objects, "Service")  # no bundled Redis unless asked
    settings = router_settings(objects)
    assert settings["image"]["reference"] == "ghcr.io/switchpoint/router:0.1.0"
    assert settings["redis"]["url"] == ""


def test_other_values(tmp_path: Path) -> None:
    objects = render(tmp_path, OTHER_VALUES)
    container = find(objects, "Deployment", "sp-switchpoint-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/sp/operator:1.2.3"
    assert container["args"][-5:] == ["--namespace", "llm-a", "--namespace", "llm-b", "--no-nudge"]
    assert sorted(r["metadata"]["namespace"] for r in find(objects, "Role")) == ["llm-a", "llm-b"]
    assert find(objects, "ServiceAccount")[0]["metadata"]["name"] == "switchpoint-op"
    assert find(objects, "Service", "sp-switchpoint-redis")
    settings = router_settings(objects)
    assert settings["redis"]["url"] == f"redis://sp-switchpoint-redis.{NAMESPACE}.svc:6379/0"
    assert settings["otlpEndpoint"] == "http://otel-collector.observability:4317"
    assert settings["imagePullSecrets"] == ["regcred"]


def test_rbac_is_least_privilege(tmp_path: Path) -> None:
    for values, nudge in ((None, True), (OTHER_VALUES, False)):
        objects = render(tmp_path, values)
        rules = [rule for role in find(objects, "ClusterRole") + find(objects, "Role") for rule in role["rules"]]
        for rule in rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert "secrets" not in rule["resources"]
            if rule["apiGroups"] == ["switchpoint.dev"] and "routingpolicies" in rule["resources"]:
                assert rule["verbs"] == ["get", "list", "watch"]  # never writes users' specs
        pod_verbs = {v for rule in rules if "pods" in rule["resources"] for v in rule["verbs"]}
        assert ("patch" in pod_verbs) is nudge
    cluster_role = find(render(tmp_path, OTHER_VALUES), "ClusterRole")[0]
    assert [r["resources"] for r in cluster_role["rules"]] == [["customresourcedefinitions"], ["namespaces"]]


def test_external_and_bundled_redis_are_exclusive(tmp_path: Path) -> None:
    done = subprocess.run([str(HELM), "template", "sp", str(CHART), "--set",
                           "redis.url=redis://r:6379/0,redis.bundled.enabled=true"], capture_output=True, text=True)
    assert done.returncode != 0 and "redis.url and redis.bundled.enabled are exclusive" in done.stderr


def test_notes_say_what_to_apply_next() -> None:
    out = helm("install", "sp", str(CHART), "--dry-run=client", "--namespace", NAMESPACE)
    notes = out[out.index("NOTES:"):]
    assert "kubectl apply -f deploy/examples/cluster/" in notes
    assert "kubectl apply -f deploy/examples/policy.yaml -f deploy/examples/budgets.yaml" in notes
    assert "no Redis is configured" in notes


@pytest.mark.parametrize("values", [None, OTHER_VALUES], ids=["defaults", "other-values"])
def test_router_objects_the_operator_writes_are_valid(tmp_path: Path, values: dict[str, Any] | None) -> None:
    """The chart's router settings, read by the operator, give Kubernetes-valid router objects."""
    settings = settings_from_dict(router_settings(render(tmp_path, values)))
    docs = [*load(EXAMPLES / "cluster" / "pools.yaml"), *load(EXAMPLES / "policy.yaml")]
    for doc in docs:
        doc["metadata"]["uid"] = "0b0e7d5a-0000-4000-8000-000000000000"
    observed = Observed("default", pools=docs[:-1], policies=docs[-1:])
    plan = plan_namespace(observed, settings, "2026-01-01T00:00:00Z")
    kinds = sorted(o["kind"] for o in plan.apply)
    expected = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert kinds == sorted(expected + (["HorizontalPodAutoscaler"] if values else []))
    for obj in plan.apply:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert CONFIG_FILE in next(o for o in plan.apply if o["kind"] == "ConfigMap")["data"]


CLUSTER_EXAMPLES = [*sorted((EXAMPLES / "cluster").glob("*.yaml")), EXAMPLES / "policy.yaml", EXAMPLES / "budgets.yaml"]


@pytest.mark.parametrize("path", CLUSTER_EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_cluster_examples_are_valid(path: Path) -> None:
    """Custom resources against the CRDs' own schemas (defaults, structure, CEL); the rest against Kubernetes'."""
    for doc in load(path):
        if doc["apiVersion"].startswith("switchpoint.dev/"):
            resource = schema.schema_for(doc["kind"], doc["apiVersion"].split("/")[1])
            assert resource is not None
            _, violations = schema.validate(resource, doc)
            assert violations == [], violations
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
