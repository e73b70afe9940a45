"""The Kubernetes objects that run one RoutingPolicy's routers, built as plain dicts (pure functions).

Config changes reach routers by hot reload, never by a rollout: the pod
template carries no config digest, so a new ConfigMap (a policy edit) never
restarts routers. Restarting would drop the in-flight ledger each router keeps
for Report, and a broken config could not fall back to the one already serving.
Only changes to how routers run (image, resources, flags) roll the Deployment,
one pod at a time.

Pods come and go without the operator: routers of a policy whose pools select
pods watch those pods themselves (router/discovery.py), as a ServiceAccount of
their own, `<policy>-router`, bound to a Role that may list and watch pods in
the policy's namespace and nothing else. A policy on static pools only gets
no ServiceAccount and its pods mount no token.
"""

from __future__ import annotations

from typing import Any

from switchpoint.operator.kube import PODS, ROLES
from switchpoint.operator.labels import (
    CONFIG_DIGEST,
    CONFIG_FILE,
    CONFIG_MOUNT,
    GRPC_PORT,
    METRICS_PORT,
    config_map_name,
    managed_labels,
    router_name,
    selector_labels,
)
from switchpoint.operator.settings import RouterSettings


def owner_reference(policy: dict[str, Any]) -> dict[str, Any]:
    meta = policy["metadata"]
    return {"apiVersion": policy["apiVersion"], "kind": "RoutingPolicy", "name": meta["name"],
            "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}


def _metadata(policy: dict[str, Any], name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta = policy["metadata"]
    out: dict[str, Any] = {"name": name, "namespace": meta["namespace"], "labels": managed_labels(meta["name"]),
                           "ownerReferences": [owner_reference(policy)]}
    if annotations:
        out["annotations"] = annotations
    return out


def config_map(policy: dict[str, Any], config_yaml: str, digest: str) -> dict[str, Any]:
    name = config_map_name(policy["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(policy, name, {CONFIG_DIGEST: digest}),
            "data": {CONFIG_FILE: config_yaml}}


def router_args(settings: RouterSettings) -> list[str]:
    args = ["--log-level", settings.log_level, "router", "--config", CONFIG_MOUNT, "--host", "0.0.0.0",
            "--port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT)]
    if not settings.budget_leases:
        args.append("--no-budget-leases")
    if settings.otlp_endpoint:
        args += ["--otlp-endpoint", settings.otlp_endpoint]
    return args


def _env(settings: RouterSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if settings.redis_secret:
        ref = {"name": settings.redis_secret["name"], "key": settings.redis_secret.get("key", "url")}
        env.append({"name": "SWITCHPOINT_REDIS_URL", "valueFrom": {"secretKeyRef": ref}})
    elif settings.redis_url:
        env.append({"name": "SWITCHPOINT_REDIS_URL", "value": settings.redis_url})
    if settings.settle_key_secret:
        # optional: without the Secret in the policy's namespace the routers start, each settling only its own
        # requests (and say so in their log)
        ref = {"name": settings.settle_key_secret["name"], "key": settings.settle_key_secret.get("key", "key"),
               "optional": True}
        env.append({"name": "SWITCHPOINT_SETTLE_KEY", "valueFrom": {"secretKeyRef": ref}})
    return env


ROUTER_RULES = [{"apiGroups": [PODS.group], "resources": [PODS.plural], "verbs": ["list", "watch"]}]


def service_account(policy: dict[str, Any]) -> dict[str, Any]:
    """The routers' identity; it mounts no token by itself (the router pod asks for one)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _metadata(policy, router_name(policy["metadata"]["name"])),
            "automountServiceAccountToken": False}


def role(policy: dict[str, Any]) -> dict[str, Any]:
    """What a router does with the API: list and watch the pods of its namespace (RBAC cannot narrow a list to a
    label selector; the router's own list and watch ask the server for its pools' pods only)."""
    return {"apiVersion": ROLES.api_version, "kind": "Role",
            "metadata": _metadata(policy, router_name(policy["metadata"]["name"])), "rules": ROUTER_RULES}


def role_binding(policy: dict[str, Any]) -> dict[str, Any]:
    meta = policy["metadata"]
    name = router_name(meta["name"])
    return {"apiVersion": ROLES.api_version, "kind": "RoleBinding", "metadata": _metadata(policy, name),
            "roleRef": {"apiGroup": ROLES.group, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta["namespace"]}]}


def deployment(policy: dict[str, Any], settings: RouterSettings, watches_pods: bool = False) -> dict[str, Any]:
    policy_name = policy["metadata"]["name"]
    name = router_name(policy_name)
    grpc_probe = {"grpc": {"port": GRPC_PORT}}
    container: dict[str, Any] = {
        "name": "router",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": router_args(settings),
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3, "initialDelaySeconds": 5},
        # Endpoints are removed asynchronously: keep serving a few seconds after SIGTERM is decided.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "resources": settings.resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    env = _env(settings)
    if env:
        container["env"] = env
    pod_spec: dict[str, Any] = {
        # The token only where a pool selects pods: the routers watch them (the ServiceAccount mounts none itself).
        "automountServiceAccountToken": watches_pods,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": config_map_name(policy_name)}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    if watches_pods:
        pod_spec["serviceAccountName"] = router_name(policy_name)
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    if settings.node_selector:
        pod_spec["nodeSelector"] = settings.node_selector
    if settings.tolerations:
        pod_spec["tolerations"] = list(settings.tolerations)
    spec: dict[str, Any] = {
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector_labels(policy_name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": managed_labels(policy_name)}, "spec": pod_spec},
    }
    if settings.autoscaling is None:  # with an HPA, the HPA owns spec.replicas
        spec["replicas"] = settings.replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(policy, name), "spec": spec}


def service(policy: dict[str, Any]) -> dict[str, Any]:
    policy_name = policy["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(policy, router_name(policy_name)),
        "spec": {"type": "ClusterIP", "selector": selector_labels(policy_name), "ports": [
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "kubernetes.io/h2c"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ]},
    }


def disruption_budget(policy: dict[str, Any]) -> dict[str, Any]:
    policy_name = policy["metadata"]["name"]
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _metadata(policy, router_name(policy_name)),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(policy_name)}}}


def autoscaler(policy: dict[str, Any], settings: RouterSettings) -> dict[str, Any] | None:
    auto = settings.autoscaling
    if auto is None:
        return None
    name = router_name(policy["metadata"]["name"])
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(policy, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": auto.min_replicas, "maxReplicas": auto.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto.target_cpu_percent}}}],
        },
    }


def router_objects(policy: dict[str, Any], settings: RouterSettings, config_yaml: str, digest: str,
                   watches_pods: bool = False) -> list[dict[str, Any]]:
    """Everything one accepted policy needs, the routers' identity and config first (a new Deployment then finds
    its ServiceAccount and ConfigMap). `watches_pods`: a pool the policy uses selects pods."""
    identity = [service_account(policy), role(policy), role_binding(policy)] if watches_pods else []
    objects = [*identity, config_map(policy, config_yaml, digest), deployment(policy, settings, watches_pods),
               service(policy), disruption_budget(policy)]
    hpa = autoscaler(policy, settings)
    if hpa is not None:
        objects.append(hpa)
    return objects
