"""`switchpoint bench discovery`: how soon a pod's Ready transition reaches routing when routers watch their pods.

Against a Kubernetes API (the test control plane, or any cluster the kubeconfig names): the bench plays the
kubelet, creating Pod objects of a selector ModelPool and setting their status, and plays the router: a
ReplicaDiscovery (router/discovery.py) watches the pool's pods and is the scheduler's ReplicaSource, and the
scheduler places a request on the pool every millisecond. One pod at a time, so a placement either picks it or
finds no replica:
- ready -> routable: from the moment the bench sends Ready=True to the first placement that picks the pod;
- gone -> unroutable: from the moment it sends the deletion to the last placement that still picks the pod
  (0 when none did).
The pods carry a label unique to the run and are deleted at the end.

Baseline, in the same run (where the CRDs are installed): the operator's path, which is how replicas reached
routers before they watched pods. The operator (`switchpoint operator`, in-process) watches the pods and, in one
reconcile pass (debounce, list the namespace, plan, write), updates the ModelPool's status; the bench times
Ready=True -> status.readyReplicas 1 (and deletion -> 0). The same pass used to rewrite the router ConfigMap; the
kubelet's refresh of the mounted file (a second or two after the operator's nudge, up to about a minute without)
and the router's 1 s file poll came on top, and neither can be measured without a kubelet.

Without --kubeconfig the bench starts its own control plane (switchpoint/localkube.py: etcd and kube-apiserver
from `make controlplane`) and installs the CRDs there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchpoint.bench.router import percentile
from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.config.model import Candidate, Pool, Replica, RouterConfig
from switchpoint.operator.kube import CONFIG_MAPS, PODS, POLICIES, POOLS, Connection, KubeApi, from_kubeconfig
from switchpoint.operator.labels import config_map_name
from switchpoint.router.discovery import ReplicaDiscovery
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.scheduler import Scheduler

POOL = "bench-discovery"
LABEL = "switchpoint.dev/bench-discovery"
PORT = 8000
TARGET_S = 2.0  # issue 16: a pod's Ready transition reaches routing in under 2 s
STATUS_POLL_S = 0.005  # how often the baseline reads the ModelPool's status


@dataclass
class DiscoveryResult:
    ready_to_routable: list[float] = field(default_factory=list)
    gone_to_unroutable: list[float] = field(default_factory=list)
    baseline_ready_to_status: list[float] = field(default_factory=list)  # empty: the baseline did not run
    baseline_gone_from_status: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "trials": len(self.ready_to_routable),
            "ready_to_routable_p50_s": round(percentile(self.ready_to_routable, 0.5), 4),
            "ready_to_routable_p99_s": round(percentile(self.ready_to_routable, 0.99), 4),
            "gone_to_unroutable_p99_s": round(percentile(self.gone_to_unroutable, 0.99), 4)}
        if self.baseline_ready_to_status:
            out.update(baseline_ready_to_status_p50_s=round(percentile(self.baseline_ready_to_status, 0.5), 4),
                       baseline_ready_to_status_p99_s=round(percentile(self.baseline_ready_to_status, 0.99), 4),
                       baseline_gone_from_status_p99_s=round(percentile(self.baseline_gone_from_status, 0.99), 4))
        return out


def pool_manifest(namespace: str, run: str) -> dict[str, Any]:
    """One ModelPool selecting the pods labelled with this run's id."""
    return {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": POOL, "namespace": namespace},
            "spec": {"models": [{"name": "bench-model"}],
                     "replicas": {"selector": {"matchLabels": {LABEL: run}}, "port": PORT}}}


def policy_manifest(namespace: str, run: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": POOL, "namespace": namespace},
            "spec": {"aliases": [f"bench-{run}"], "default": {"pools": [{"pool": POOL}]}}}


def bench_config(namespace: str, run: str) -> RouterConfig:
    return compile_manifests([Manifest("bench", pool_manifest(namespace, run))])


class Kubelet:
    """What a kubelet reports about the bench's pods, and the user's create and delete."""

    def __init__(self, api: KubeApi, namespace: str, run: str):
        self.api, self.namespace, self.run = api, namespace, run
        self.created: list[str] = []

    async def start(self, name: str, ip: str) -> None:
        await self.api.create(PODS, self.namespace, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {LABEL: self.run}},
            "spec": {"containers": [{"name": "server", "image": "bench/model-server"}]}})
        self.created.append(name)
        await self.status(name, {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                                 "conditions": [{"type": "Ready", "status": "False"}]})

    async def status(self, name: str, status: dict[str, object]) -> None:
        await self.api.patch(PODS, self.namespace, name, {"status": status}, sub="status")

    async def ready(self, name: str) -> None:
        await self.status(name, {"conditions": [{"type": "Ready", "status": "True"}]})

    async def delete(self, name: str) -> None:
        await self.api.delete(PODS, self.namespace, name)
        self.created.remove(name)

    async def clean_up(self) -> None:
        for name in list(self.created):
            await self.delete(name)


class Router:
    """Places one request on the pool as the router does: its scheduler takes its replicas from the discovery
    (a ReplicaSource), and is told to retain the config whenever they change."""

    def __init__(self, discovery: ReplicaDiscovery, config: RouterConfig, pool: Pool):
        self.scheduler = Scheduler(InflightLedger(), replicas=discovery)
        self.config = config
        self.candidate = Candidate(pool, "bench-model")
        self.request = RouteInput(request_id="bench", model="bench-model", messages=[ChatTurn("user", "hello")])

    def replicas_changed(self, pool_key: str, replicas: tuple[Replica, ...]) -> None:
        self.scheduler.retain(self.config)

    def picked(self) -> str | None:
        """The address of the replica a Route would pick now (None: the pool has no ready replica)."""
        placement = self.scheduler.place(self.candidate, self.request)
        return placement.replica.address if placement else None


async def _until(router: Router, want: bool, address: str, interval_s: float, timeout_s: float) -> float | None:
    """Route every `interval_s` until the pick is (want) or is not (not want) `address`; the time it changed,
    or None after `timeout_s`."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if (router.picked() == address) == want:
            return time.perf_counter()
        await asyncio.sleep(interval_s)
    return None


async def _poll_status(api: KubeApi, namespace: str, ready: int, timeout_s: float) -> float:
    deadline = time.perf_counter() + timeout_s
    while ((await api.get(POOLS, namespace, POOL) or {}).get("status") or {}).get("readyReplicas") != ready:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the operator did not report {ready} ready replica(s) in ModelPool {namespace}/{POOL} "
                               f"within {timeout_s:.0f}s")
        await asyncio.sleep(STATUS_POLL_S)
    return time.perf_counter()


async def measure_operator_path(connection: Connection, namespace: str, trials: int, result: DiscoveryResult,
                                timeout_s: float = 30.0) -> None:
    """The baseline: Ready=True -> the operator's ModelPool status counts the pod (and deletion -> no longer)."""
    from switchpoint.operator.command import serve_with

    run = uuid.uuid4().hex[:10]
    api = KubeApi(connection)
    kubelet = Kubelet(api, namespace, run)
    stop = asyncio.Event()
    args = argparse.Namespace(namespace=[namespace], router_settings=None, nudge=False, resync_seconds=60.0,
                              debounce_seconds=0.2, liveness="")  # the CLI's defaults, without the nudge
    operator = asyncio.create_task(serve_with(connection, args, stop))
    try:
        await api.create(POOLS, namespace, pool_manifest(namespace, run))
        await api.create(POLICIES, namespace, policy_manifest(namespace, run))
        for i in range(trials):
            name, ip = f"{POOL}-{run}-{i}", f"10.78.{i // 250}.{i % 250 + 1}"
            await kubelet.start(name, ip)
            await _poll_status(api, namespace, 0, timeout_s)  # the operator reports the pool (0 ready)
            sent = time.perf_counter()
            await kubelet.ready(name)
            result.baseline_ready_to_status.append(await _poll_status(api, namespace, 1, timeout_s) - sent)
            sent = time.perf_counter()
            await kubelet.delete(name)
            result.baseline_gone_from_status.append(await _poll_status(api, namespace, 0, timeout_s) - sent)
    finally:
        await kubelet.clean_up()
        await api.delete(POLICIES, namespace, POOL)  # the operator deletes the router objects it made for it
        deadline = time.perf_counter() + 10
        while await api.get(CONFIG_MAPS, namespace, config_map_name(POOL)) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        await api.delete(POOLS, namespace, POOL)
        stop.set()
        await asyncio.wait_for(operator, 30)
        await api.close()


async def measure(connection: Connection, namespace: str, trials: int = 20, interval_s: float = 0.001,
                  timeout_s: float = 30.0) -> DiscoveryResult:
    run = uuid.uuid4().hex[:10]
    config = bench_config(namespace, run)
    pool = config.pools[f"{namespace}/{POOL}"]
    kubelet_api, router_api = KubeApi(connection), KubeApi(connection)  # separate clients, as separate processes
    kubelet = Kubelet(kubelet_api, namespace, run)
    discovery = ReplicaDiscovery(router_api)
    router = Router(discovery, config, pool)
    discovery.on_change = router.replicas_changed
    result = DiscoveryResult()
    try:
        discovery.update(config)
        if not await discovery.listed():
            raise RuntimeError(f"could not list pods in namespace {namespace} within 10 s")
        for i in range(trials):
            name, ip = f"{POOL}-{run}-{i}", f"10.77.{i // 250}.{i % 250 + 1}"
            address = f"{ip}:{PORT}"
            await kubelet.start(name, ip)
            sent = time.perf_counter()
            await kubelet.ready(name)
            routable = await _until(router, True, address, interval_s, timeout_s)
            if routable is None:
                raise RuntimeError(f"pod {name} was not routable {timeout_s:.0f}s after it turned Ready")
            result.ready_to_routable.append(routable - sent)
            sent = time.perf_counter()
            last_pick = sent
            deletion = asyncio.create_task(kubelet.delete(name))
            while router.picked() == address:
                last_pick = time.perf_counter()
                if last_pick - sent > timeout_s:
                    raise RuntimeError(f"pod {name} was still routable {timeout_s:.0f}s after its deletion")
                await asyncio.sleep(interval_s)
            await deletion
            result.gone_to_unroutable.append(last_pick - sent)
    finally:
        await discovery.stop()
        await kubelet.clean_up()
        await kubelet_api.close()
        await router_api.close()
    return result


def table(result: DiscoveryResult, server: str, namespace: str) -> str:
    def row(name: str, values: list[float]) -> str:
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        return f"{name:<26}{p50 * 1e3:>10.1f}{p99 * 1e3:>10.1f}{max(values) * 1e3:>10.1f}"

    lines = [f"discovery: {len(result.ready_to_routable)} pods one after another, API {server}, namespace {namespace}",
             f"{'':<26}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
             "routers watch their pods:",
             row("  ready -> routable", result.ready_to_routable),
             row("  gone -> unroutable", result.gone_to_unroutable)]
    if result.baseline_ready_to_status:
        lines += ["baseline, the operator's reconcile pass (it used to rewrite the router ConfigMap; the kubelet's "
                  "volume refresh and the router's 1 s file poll followed):",
                  row("  ready -> in pool status", result.baseline_ready_to_status),
                  row("  gone -> out of status", result.baseline_gone_from_status)]
    else:
        lines.append("baseline not run: the switchpoint.dev CRDs are not installed (kubectl apply -f crds/)")
    lines.append(f"target: ready -> routable p99 under {TARGET_S:.0f} s: "
                 f"{'met' if percentile(result.ready_to_routable, 0.99) < TARGET_S else 'NOT met'}")
    return "\n".join(lines)


async def measure_both(connection: Connection, namespace: str, trials: int) -> DiscoveryResult:
    result = await measure(connection, namespace, trials)
    api = KubeApi(connection)
    try:
        crds = all([await api.served(POOLS), await api.served(POLICIES)])
    finally:
        await api.close()
    if crds:
        await measure_operator_path(connection, namespace, trials, result)
    return result


def run(args: argparse.Namespace) -> int:
    """args: kubeconfig (None: start a local control plane), context, namespace (where the pods go), trials, json."""
    for name in ("kopf", "switchpoint.operator", "switchpoint.router.discovery"):  # a line per event is noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.kubeconfig is not None:
        connection = from_kubeconfig(args.context, args.kubeconfig)
        result = asyncio.run(measure_both(connection, args.namespace, args.trials))
    else:
        connection, result = local_run(args.namespace, args.trials)
    print(json.dumps(result.summary()) if args.json else table(result, connection.server, args.namespace))
    return 0


def local_run(namespace: str, trials: int) -> tuple[Connection, DiscoveryResult]:
    """The bench against a control plane of its own (etcd and kube-apiserver on 127.0.0.1), with the CRDs."""
    from switchpoint.localkube import ControlPlane, missing_binaries

    missing = missing_binaries()
    if missing:
        raise RuntimeError("no --kubeconfig, and the local control plane is not built: " + "; ".join(missing))
    with tempfile.TemporaryDirectory(prefix="switchpoint-kube-") as work:
        plane = ControlPlane(Path(work))
        plane.start()
        try:
            plane.install_crds()
            if namespace != "default":
                plane.kubectl("create", "namespace", namespace)
            connection = from_kubeconfig(path=str(plane.admin_kubeconfig))
            return connection, asyncio.run(measure_both(connection, namespace, trials))
        finally:
            plane.stop()
