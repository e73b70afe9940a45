"""What the operator reads from one namespace before deciding anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    namespace: str
    pools: list[Body] = field(default_factory=list)
    policies: list[Body] = field(default_factory=list)
    budgets: list[Body] = field(default_factory=list)
    pods: list[Body] = field(default_factory=list)  # model-server pods, when a pool selects pods
    router_pods: list[Body] = field(default_factory=list)
    managed: list[Body] = field(default_factory=list)  # router objects owned by RoutingPolicies
    spend: dict[str, Any] = field(default_factory=dict)  # budget "ns/name" -> spend.Spend, from the routers

    def owned_by(self, policy: str) -> list[Body]:
        return [obj for obj in self.managed if owner_name(obj) == policy]

    def live(self, kind: str, name: str) -> Body | None:
        for obj in self.managed:
            if obj.get("kind") == kind and obj["metadata"]["name"] == name:
                return obj
        return None


def owner_name(obj: Body) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("kind") == "RoutingPolicy" and ref.get("apiVersion", "").startswith("switchpoint.dev/"):
            return str(ref.get("name"))
    return None


def needs_pods(pools: list[Body]) -> bool:
    return any("selector" in ((p.get("spec") or {}).get("replicas") or {}) for p in pools)
