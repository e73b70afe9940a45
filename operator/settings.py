"""How router pods are run: operator-wide defaults (from the Helm chart) and per-policy overrides.

The RoutingPolicy CRD has no router section yet, so a policy may override the
replica count and autoscaling with annotations (`switchpoint.dev/router-replicas`,
`router-min-replicas`, `router-max-replicas`, `router-target-cpu`). A bad value
is a problem that names the annotation, like any other field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from switchpoint.operator.labels import GROUP

REPLICAS = f"{GROUP}/router-replicas"
MIN_REPLICAS = f"{GROUP}/router-min-replicas"
MAX_REPLICAS = f"{GROUP}/router-max-replicas"
TARGET_CPU = f"{GROUP}/router-target-cpu"


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int = 70


@dataclass(frozen=True)
class RouterSettings:
    image: str = "ghcr.io/switchpoint/router:latest"
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 2
    autoscaling: Autoscaling | None = None
    resources: dict[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}})
    redis_url: str | None = None  # passed as SWITCHPOINT_REDIS_URL (the router's --redis default)
    redis_secret: dict[str, str] | None = None  # {name, key}: the URL from a Secret in the policy's namespace
    # {name, key}: the settle key the policy's routers share (SWITCHPOINT_SETTLE_KEY), from a Secret in its namespace
    settle_key_secret: dict[str, str] | None = None
    otlp_endpoint: str | None = None
    log_level: str = "info"
    budget_leases: bool = True  # False: the routers run with --no-budget-leases
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


def load_settings(path: str | Path | None) -> RouterSettings:
    """Read the router defaults the chart renders (YAML, camelCase keys as in values.yaml)."""
    if path is None:
        return RouterSettings()
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return settings_from_dict(raw)


def settings_from_dict(raw: dict[str, Any]) -> RouterSettings:
    auto = raw.get("autoscaling") or {}
    autoscaling = None
    if auto.get("enabled"):
        autoscaling = Autoscaling(int(auto.get("minReplicas", 2)), int(auto.get("maxReplicas", 10)),
                                  int(auto.get("targetCPUUtilizationPercentage", 70)))
    image = raw.get("image") or {}
    redis = raw.get("redis") or {}
    defaults = RouterSettings()
    return RouterSettings(
        image=image.get("reference") or defaults.image,
        image_pull_policy=image.get("pullPolicy") or defaults.image_pull_policy,
        replicas=int(raw.get("replicas", defaults.replicas)),
        autoscaling=autoscaling,
        resources=raw.get("resources") or defaults.resources,
        redis_url=redis.get("url") or None,
        redis_secret=redis.get("existingSecret") or None,
        settle_key_secret=raw.get("settleKey") or None,
        otlp_endpoint=raw.get("otlpEndpoint") or None,
        log_level=raw.get("logLevel") or defaults.log_level,
        budget_leases=_flag(raw, "budgetLeases", defaults.budget_leases),
        image_pull_secrets=tuple(raw.get("imagePullSecrets") or ()),
        node_selector=dict(raw.get("nodeSelector") or {}),
        tolerations=tuple(raw.get("tolerations") or ()),
    )


def _flag(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"router settings: {key} must be true or false, got {value!r}")
    return value


def for_policy(defaults: RouterSettings, annotations: dict[str, str]) -> tuple[RouterSettings, list[tuple[str, str]]]:
    """The settings for one policy and the problems (field, message) of its override annotations."""
    problems: list[tuple[str, str]] = []

    def number(key: str, low: int, high: int) -> int | None:
        if key not in annotations:
            return None
        value = str(annotations[key]).strip()
        if not value.isdigit() or not low <= int(value) <= high:
            problems.append((f"metadata.annotations[{key}]", f"'{value}' is not a whole number in {low}..{high}"))
            return None
        return int(value)

    replicas = number(REPLICAS, 1, 1000)
    low, high, cpu = number(MIN_REPLICAS, 1, 1000), number(MAX_REPLICAS, 1, 1000), number(TARGET_CPU, 1, 100)
    settings = defaults
    if replicas is not None:
        settings = dataclasses.replace(settings, replicas=replicas)
    if low is not None or high is not None or cpu is not None:
        base = settings.autoscaling or Autoscaling(settings.replicas, max(settings.replicas, 10))
        auto = Autoscaling(low or base.min_replicas, high or base.max_replicas, cpu or base.target_cpu_percent)
        if auto.min_replicas > auto.max_replicas:
            problems.append((f"metadata.annotations[{MIN_REPLICAS}]",
                             f"min replicas {auto.min_replicas} exceeds max replicas {auto.max_replicas}"))
        else:
            settings = dataclasses.replace(settings, autoscaling=auto)
    return settings, problems
