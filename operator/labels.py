"""Names, labels and annotations the operator puts on what it creates (one place, so tests and code agree)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GROUP = "switchpoint.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "switchpoint-operator"
NAME = "app.kubernetes.io/name"
ROUTER_APP = "switchpoint-router"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
POLICY_LABEL = f"{GROUP}/policy"

APPLIED_HASH = f"{GROUP}/applied-hash"  # hash of the desired object last written; skips no-op patches
CONFIG_DIGEST = f"{GROUP}/config-digest"  # the compiled config's digest (RouterConfig.digest) in a ConfigMap

CONFIG_FILE = "switchpoint.yaml"  # one key, so the router never reads half of an update
CONFIG_MOUNT = "/etc/switchpoint/config"
GRPC_PORT = 50051
METRICS_PORT = 9090

MAX_NAME = 63  # Service names are DNS-1035 labels


def router_name(policy: str) -> str:
    """The name of a policy's Deployment, Service, PDB and HPA: `<policy>-router`, kept a valid DNS-1035 label."""
    name = f"{policy}-router"
    if not name[0].isalpha():
        name = f"r-{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(policy.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - len(digest) - 8].rstrip('-.')}-{digest}-router"
    return name.replace(".", "-")


def config_map_name(policy: str) -> str:
    return f"{router_name(policy)}-config"


def selector_labels(policy: str) -> dict[str, str]:
    return {NAME: ROUTER_APP, INSTANCE: policy[:63].rstrip("-_.")}


def managed_labels(policy: str) -> dict[str, str]:
    return {**selector_labels(policy), MANAGED_BY: MANAGER, COMPONENT: "router",
            POLICY_LABEL: policy[:63].rstrip("-_.")}


def object_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
