"""Replica discovery: which pods a ModelPool selects, which of them are ready, and their roles.

Pure functions over pod bodies as the API returns them. The operator reports the
result in the ModelPool's status; routers apply the same rules to the pods they
watch (router/discovery.py), so both agree on which replicas are ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Pod label values (llm-d and ours) -> the router's roles. A pod without the label serves both.
ROLE_VALUES = {"prefill": "prefill", "decode": "decode", "prefill-decode": "both", "both": "both"}


@dataclass(frozen=True)
class DiscoveredReplica:
    pod: str
    address: str  # host:port, IPv6 in brackets
    role: str  # prefill, decode or both


@dataclass(frozen=True)
class Discovery:
    """What a selector pool found among the pods of its namespace."""

    selected: int = 0  # pods the selector matches, ready or not
    ready: tuple[DiscoveredReplica, ...] = ()
    unknown_roles: tuple[str, ...] = field(default=())  # "pod=value" for role labels we do not understand

    def by_role(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for replica in self.ready:
            counts[replica.role] = counts.get(replica.role, 0) + 1
        return counts


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches every pod)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or ()
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def pod_is_ready(pod: dict[str, Any]) -> bool:
    """Running, not terminating, has an IP, and its Ready condition is True (readiness probes passed)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def discover(replicas_spec: dict[str, Any], pods: list[dict[str, Any]]) -> Discovery:
    """The ready replicas a pool's `spec.replicas` (selector, port, roleLabel) finds among the pods."""
    selector = replicas_spec.get("selector") or {}
    port = int(replicas_spec["port"])
    role_label = replicas_spec.get("roleLabel") or "llm-d.ai/role"
    selected = 0
    ready: list[DiscoveredReplica] = []
    unknown: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if not selector_matches(selector, labels):
            continue
        selected += 1
        if not pod_is_ready(pod):
            continue
        raw_role = labels.get(role_label, "both")
        role = ROLE_VALUES.get(raw_role)
        if role is None:
            unknown.append(f"{meta.get('name')}={raw_role}")
            continue
        ready.append(DiscoveredReplica(str(meta.get("name")), address(pod["status"]["podIP"], port), role))
    ready.sort(key=lambda r: r.address)
    return Discovery(selected, tuple(ready), tuple(sorted(unknown)))
