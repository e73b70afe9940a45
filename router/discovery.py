"""Routers discover their replicas: a watch on the pods each selector pool selects (ModelPool spec.replicas.selector).

A pod's Ready transition reaches routing in one watch event (milliseconds, measured by `switchpoint bench
discovery`), instead of the operator rewriting the routers' ConfigMap and the kubelet refreshing the mounted file
(up to about a minute when no nudge lands). Each selector pool has its own list+watch, narrowed on the server by the
pool's label selector, so a router reads only its pools' pods. A pool's replicas are what
switchpoint.operator.discovery.discover finds among them (Running, Ready, not terminating, with an IP; roles from the
pool's role label), in address order, as the operator renders them today. Static pools (local mode) are not
watched: their replicas are the config's.

The router's pod needs `list` and `watch` on pods in its namespace, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from switchpoint.config.model import PodSelector, Pool, Replica, Role, RouterConfig
from switchpoint.operator.discovery import discover
from switchpoint.operator.kube import PODS, ApiError, KubeApi

log = logging.getLogger("switchpoint.router.discovery")

Changed = Callable[[str, tuple[Replica, ...]], None]  # (pool key, its replicas now)
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # after a failed list or watch; a 410 Gone relists at once


def label_selector(selector: PodSelector) -> str:
    """The pool's selector in the API's labelSelector syntax, so the server sends only the pool's pods."""
    terms = [f"{key}={value}" for key, value in selector.match_labels]
    for key, op, values in selector.match_expressions:
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ValueError(f"label selector operator {op!r} for {key!r}: expected In, NotIn, Exists, DoesNotExist")
    return ",".join(terms)


def selector_spec(selector: PodSelector) -> dict[str, Any]:
    """The compiled selector as the ModelPool's spec.replicas, the input of operator.discovery.discover."""
    return {"selector": {"matchLabels": dict(selector.match_labels),
                         "matchExpressions": [{"key": k, "operator": op, "values": list(v)}
                                              for k, op, v in selector.match_expressions]},
            "port": selector.port, "roleLabel": selector.role_label}


def ready_replicas(selector: PodSelector, pods: list[dict[str, Any]]) -> tuple[Replica, ...]:
    found = discover(selector_spec(selector), pods)
    return tuple(Replica(r.address, Role(r.role)) for r in found.ready)


class PoolWatch:
    """List, then watch, one selector pool's pods; `changed` is called whenever its ready replicas change."""

    def __init__(self, api: KubeApi, pool: Pool, changed: Changed, watch_timeout_s: int = 300):
        assert pool.selector is not None
        self.api, self.pool, self.selector, self.changed = api, pool, pool.selector, changed
        self.watch_timeout_s = watch_timeout_s
        self.query = label_selector(pool.selector)
        self.pods: dict[str, dict[str, Any]] = {}
        self.replicas: tuple[Replica, ...] | None = None  # None until the first list

    def _publish(self) -> None:
        replicas = ready_replicas(self.selector, list(self.pods.values()))
        if replicas != self.replicas:
            self.replicas = replicas
            self.changed(self.pool.key, replicas)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                items, version = await self.api.list_versioned(PODS, self.pool.namespace, self.query)
                self.pods = {p["metadata"]["name"]: p for p in items}
                self._publish()
                failures = 0
                while True:  # the server ends each watch after watch_timeout_s; go on from the last version seen
                    async for kind, obj in self.api.watch(PODS, self.pool.namespace, version, self.query,
                                                          self.watch_timeout_s):
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind == "BOOKMARK":
                            continue
                        name = obj["metadata"]["name"]
                        if kind == "DELETED":
                            self.pods.pop(name, None)
                        else:
                            self.pods[name] = obj
                        self._publish()
            except ApiError as exc:
                if exc.status == 410:  # our version is too old for the watch cache: list again, at once
                    continue
                failures += 1
                delay = RETRY_S[min(failures, len(RETRY_S)) - 1]
                log.warning("pool %s: pod watch failed (%s); the last replicas stay in use; again in %.1fs",
                            self.pool.key, exc, delay)
                await asyncio.sleep(delay)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                failures += 1
                delay = RETRY_S[min(failures, len(RETRY_S)) - 1]
                log.warning("pool %s: pod watch interrupted (%s: %s); the last replicas stay in use; again in %.1fs",
                            self.pool.key, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)


class ReplicaDiscovery:
    """The replicas of a config's pools: watched for selector pools, the config's own for static ones. A
    ReplicaSource (router/scheduling/pools.py): the router passes it to its Scheduler and Scraper, and calls
    Scheduler.retain from `changed`.

    `update(config)` on every config swap starts watches for new selector pools, keeps those whose selector is
    unchanged (no relist on a policy edit) and stops the others. `version(key)` grows with each change of a pool's
    replicas, so a scheduler knows when to rebuild what it prepared for the pool."""

    def __init__(self, api: KubeApi, changed: Changed | None = None):
        self.api = api
        self.on_change = changed
        self._watches: dict[str, tuple[PodSelector, PoolWatch, asyncio.Task]] = {}
        self._replicas: dict[str, tuple[Replica, ...]] = {}
        self._versions: dict[str, int] = {}
        self._first: dict[str, asyncio.Event] = {}

    def replicas(self, pool: Pool) -> tuple[Replica, ...]:
        if pool.selector is None:
            return pool.static_replicas
        return self._replicas.get(pool.key, ())

    def version(self, pool_key: str) -> int:
        return self._versions.get(pool_key, 0)

    def _changed(self, key: str, replicas: tuple[Replica, ...]) -> None:
        self._replicas[key] = replicas
        self._versions[key] = self._versions.get(key, 0) + 1
        self._first.setdefault(key, asyncio.Event()).set()
        log.info("pool %s: %d ready replica(s)", key, len(replicas))
        if self.on_change is not None:
            self.on_change(key, replicas)

    def update(self, config: RouterConfig) -> None:
        wanted = {key: pool for key, pool in config.pools.items() if pool.selector is not None}
        for key in list(self._watches):
            selector, _, task = self._watches[key]
            if key not in wanted or wanted[key].selector != selector:
                task.cancel()
                del self._watches[key]
                self._replicas.pop(key, None)
                self._first.pop(key, None)
        for key, pool in wanted.items():
            if key not in self._watches:
                watch = PoolWatch(self.api, pool, self._changed)
                self._first.setdefault(key, asyncio.Event())
                self._watches[key] = (pool.selector, watch, asyncio.create_task(watch.run(), name=f"pods {key}"))

    async def listed(self, timeout_s: float = 10.0) -> bool:
        """Wait until every watched pool has been listed once (a router should not serve before); False on timeout."""
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._first.values())), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        tasks = [task for _, _, task in self._watches.values()]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
