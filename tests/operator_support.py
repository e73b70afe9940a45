"""A Kubernetes API stand-in (kmock) for operator tests, and the operator running against it in-process.

kmock keeps objects and serves list, watch, get, create, merge-patch and delete;
it does not run controllers. The tests play the controllers' parts where a story
needs them (a pod turning ready, a Deployment reporting ready replicas) and act
as the user with create/patch/delete, like `kubectl apply` and `kubectl delete`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml

from switchpoint.operator.command import serve
from switchpoint.operator.kube import CUSTOM, OWNED, PODS, Resource

BACKBONE = [("v1/namespaces", "Namespace", False), ("v1/events", "Event", True),
            ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False)]
VERBS = {"list", "watch", "get", "patch", "create", "delete"}
ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "deploy" / "examples"
LARGE = {"switchpoint.dev/example-pool": "large-reasoning"}


def key(resource: Resource) -> str:
    return f"{resource.group}/{resource.version}/{resource.plural}" if resource.group else \
        f"{resource.version}/{resource.plural}"


class Cluster:
    """kmock on 127.0.0.1, with the built-in resources the operator uses and, unless told not to, our CRDs."""

    def __init__(self, with_crds: bool = True):
        self.with_crds = with_crds
        self.emulator = kmock.KubernetesEmulator()
        self.server = kmock.Server(self.emulator)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Cluster:
        await self.emulator.__aenter__()
        await self.server.__aenter__()
        for name, kind, namespaced in BACKBONE:
            self.emulator.resources[name] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=VERBS)
        for resource in (PODS, *OWNED):
            self.declare(resource)
        self.session = aiohttp.ClientSession()
        if self.with_crds:
            await self.install_crds()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        await self.server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def declare(self, resource: Resource) -> None:
        subresources = {"status"} if resource in CUSTOM or resource.kind == "Deployment" else set()
        self.emulator.resources[key(resource)] = kmock.ResourceInfo(kind=resource.kind, namespaced=True, verbs=VERBS,
                                                                    subresources=subresources)

    async def install_crds(self) -> None:
        """What `kubectl apply -f crds/` does: the resources become served, and the CRD objects appear."""
        for resource in CUSTOM:
            self.declare(resource)
        for path in sorted(CRDS.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            await self.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        assert self.session is not None
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as response:
            if response.status == 404:
                return None
            assert response.status < 300, f"{method} {path}: {response.status} {await response.text()}"
            return await response.json()

    # -- the user's side ------------------------------------------------------------------------------

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or merge-patch the spec (and bump metadata.generation, as the API server does)."""
        resource = resource_of(obj)
        meta = obj["metadata"]
        ns = meta.setdefault("namespace", "default")
        live = await self.get(resource, ns, meta["name"])
        if live is None:
            body = {**obj, "metadata": {**meta, "uid": str(uuid.uuid4()), "generation": 1,
                                        "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ")}}
            created = await self.call("POST", resource.path(ns), body)
            assert created is not None
            return created
        patch = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
        patch["metadata"] = {"generation": int(live["metadata"].get("generation", 1)) + 1,
                             "annotations": meta.get("annotations")}
        if patch["metadata"]["annotations"] is None:
            del patch["metadata"]["annotations"]
        patched = await self.call("PATCH", resource.path(ns, meta["name"]), patch)
        assert patched is not None
        return patched

    async def replace_spec(self, obj: dict[str, Any]) -> None:
        """`kubectl apply` of an edited spec replaces lists and drops removed keys: null them first."""
        resource = resource_of(obj)
        ns, name = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        await self.call("PATCH", resource.path(ns, name), {"spec": None})
        await self.apply(obj)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        await self.call("DELETE", resource.path(namespace, name))

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.call("GET", resource.path(namespace, name))

    async def list(self, resource: Resource, namespace: str = "default") -> list[dict[str, Any]]:
        answer = await self.call("GET", resource.path(namespace))
        return list((answer or {}).get("items") or [])


def resource_of(obj: dict[str, Any]) -> Resource:
    from switchpoint.operator.kube import BY_KIND

    return BY_KIND[obj["kind"]]


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def model_pod(name: str, ip: str, labels: dict[str, str], ready: bool = True) -> dict[str, Any]:
    """A model-server pod as the kubelet would report it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "vllm"}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def operator_args(url: str, **overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {"namespace": [], "router_settings": None, "server": url, "context": None, "nudge": True,
                              "resync_seconds": 30.0, "debounce_seconds": 0.05, "liveness": ""}
    values.update(overrides)
    return argparse.Namespace(**values)


@contextlib.asynccontextmanager
async def running_operator(url: str, **overrides: Any) -> AsyncIterator[asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(operator_args(url, **overrides), stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll an async or sync check until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or ():
        if entry["type"] == kind:
            return entry
    return {}


async def apply_examples(cluster: Cluster) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    for path in (EXAMPLES / "cluster" / "pools.yaml", EXAMPLES / "policy.yaml", EXAMPLES / "budgets.yaml"):
        for doc in load(path):
            created = await cluster.apply(doc)
            if doc["kind"] == "RoutingPolicy":
                policy = created
    for pod in (model_pod("small-1", "10.0.0.1", {"switchpoint.dev/example-pool": "small-chat"}),
                model_pod("large-p", "10.0.1.1", {**LARGE, "llm-d.ai/role": "prefill"}),
                model_pod("large-d", "10.0.1.2", {**LARGE, "llm-d.ai/role": "decode"}),
                model_pod("large-x", "10.0.1.3", {**LARGE, "llm-d.ai/role": "decode"}, ready=False)):
        await cluster.apply(pod)
    return policy
