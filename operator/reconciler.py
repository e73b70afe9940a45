"""The reconcile loop: namespaces are queued by watch events, coalesced, observed, planned and applied.

Level-triggered: each pass reads the namespace's current state from the API
(never a cache that could be half-filled after a restart), so the outcome does
not depend on which events were seen. Failures (API unreachable, a 5xx, a
missing CRD) are logged with their cause and retried with exponential backoff;
a periodic resync repairs anything changed behind the operator's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from switchpoint.operator.apply import Applied, apply_plan
from switchpoint.operator.conditions import now
from switchpoint.operator.kube import BUDGETS, CUSTOM, OWNED, PODS, POLICIES, POOLS, ApiError, KubeApi
from switchpoint.operator.labels import MANAGED_BY, MANAGER, NAME, ROUTER_APP
from switchpoint.operator.observed import Observed, needs_pods, owner_name
from switchpoint.operator.plan import plan_namespace
from switchpoint.operator.settings import RouterSettings
from switchpoint.operator.spend import RouterAddress, namespace_spend, service_address

log = logging.getLogger("switchpoint.operator")

TRANSIENT = (ApiError, aiohttp.ClientError, OSError, asyncio.TimeoutError)
NUDGE_DELAY_S = 1.0  # after a ConfigMap write, look again this soon to nudge the router pods


async def observe(api: KubeApi, namespace: str, address: RouterAddress = service_address) -> Observed:
    pools, policies, budgets = await asyncio.gather(*(api.list(r, namespace) for r in (POOLS, POLICIES, BUDGETS)))
    managed_lists = await asyncio.gather(*(api.list(r, namespace, f"{MANAGED_BY}={MANAGER}") for r in OWNED))
    managed = [obj for items in managed_lists for obj in items
               if ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == MANAGER and owner_name(obj)]
    pods = await api.list(PODS, namespace) if needs_pods(pools) else []
    router_pods = [p for p in await api.list(PODS, namespace, f"{NAME}={ROUTER_APP}")
                   if ((p.get("metadata") or {}).get("labels") or {}).get(NAME) == ROUTER_APP]
    serving = [owner_name(d) or "" for d in managed
               if d["kind"] == "Deployment" and int((d.get("status") or {}).get("readyReplicas") or 0) > 0]
    spend = await namespace_spend(namespace, sorted(serving), address) if budgets and serving else {}
    return Observed(namespace, pools, policies, budgets, pods, router_pods, managed, spend)


class Reconciler:
    def __init__(self, api: KubeApi, defaults: RouterSettings, nudge: bool = True, debounce_s: float = 0.2,
                 resync_s: float = 60.0, max_backoff_s: float = 30.0, router_address: RouterAddress = service_address):
        self.api = api
        self.router_address = router_address
        self.defaults = defaults
        self.nudge = nudge
        self.debounce_s = debounce_s
        self.resync_s = resync_s
        self.max_backoff_s = max_backoff_s
        self.known: set[str] = set()
        self.pod_namespaces: set[str] = set()  # namespaces with pools that select pods
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self.passes = 0

    def enqueue(self, namespace: str | None) -> None:
        if not namespace:
            return
        self.known.add(namespace)
        self._pending.add(namespace)
        self._wake.set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()), asyncio.create_task(self._resync())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            for namespace in sorted(self.known):
                self.enqueue(namespace)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce_s)  # coalesce a burst of events into one pass
            self._wake.clear()
            batch, self._pending = self._pending, set()
            for namespace in sorted(batch):
                await self.reconcile(namespace)

    def _later(self, delay: float, namespace: str) -> None:
        asyncio.get_running_loop().call_later(delay, self.enqueue, namespace)

    async def reconcile(self, namespace: str) -> Applied | None:
        """One pass over a namespace; None if it failed (and is scheduled again)."""
        try:
            observed = await observe(self.api, namespace, self.router_address)
            plan = plan_namespace(observed, self.defaults, now(), self.nudge)
            applied = await apply_plan(self.api, plan, observed)
        except TRANSIENT as exc:
            failures = self._failures.get(namespace, 0) + 1
            self._failures[namespace] = failures
            delay = min(self.max_backoff_s, 0.5 * 2 ** (failures - 1))
            if isinstance(exc, ApiError) and exc.status == 404 and "is not served" in str(exc):
                log.error("namespace %s: the switchpoint.dev CRDs (%s) are not installed: %s; install them "
                          "(kubectl apply -f crds/, or the Helm chart); retrying in %.1fs", namespace,
                          ", ".join(r.plural for r in CUSTOM), exc, delay)
            else:
                log.warning("namespace %s: reconcile failed (attempt %d: %s: %s); retrying in %.1fs",
                            namespace, failures, type(exc).__name__, exc, delay)
            self._later(delay, namespace)
            return None
        self._failures.pop(namespace, None)
        self.passes += 1
        if needs_pods(observed.pools):
            self.pod_namespaces.add(namespace)
        else:
            self.pod_namespaces.discard(namespace)
        if plan.config_changed:
            self._later(NUDGE_DELAY_S, namespace)
        if applied:
            log.debug("namespace %s: %s", namespace, applied)
        return applied
