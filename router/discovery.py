"""Routers discover their replicas: a watch on the pods each selector pool selects (ModelPool spec.replicas.selector).

A pod's Ready transition reaches routing in one watch event (milliseconds, measured by `switchpoint bench
discovery`); before, the operator rewrote the routers' ConfigMap and the kubelet refreshed the mounted file (up to
about a minute when no nudge landed). Each selector pool has its own list+watch, narrowed on the server by the
pool's label selector, so a router reads only its pools' pods. A pool's replicas are what
switchpoint.operator.discovery.discover finds among them (Running, Ready, not terminating, with an IP; roles from the
pool's role label), in address order, as the operator counts them in the pool's status. Static pools (local mode)
are not watched: their replicas are the config's.

The router's pod needs `list` and `watch` on pods in its namespace, nothing else (the operator gives each
policy's routers a ServiceAccount bound to a Role with exactly that). A router finds its credentials with
`router_connection`: --kubeconfig, else the pod's ServiceAccount token, else $KUBECONFIG or ~/.kube/config; it
connects only once a config has a selector pool, so a local router on static pools never talks to Kubernetes.
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
from switchpoint.operator.kube import PODS, ApiError, Connection, KubeApi, from_kubeconfig, in_cluster

log = logging.getLogger("switchpoint.router.discovery")

Changed = Callable[[str, tuple[Replica, ...]], None]  # (pool key, its replicas now)
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # after a failed list or watch; a 410 Gone relists at once


class NoCredentials(RuntimeError):
    pass


def router_connection(kubeconfig: str | None = None) -> Connection:
    """The router's credentials: `kubeconfig` (its --kubeconfig), else in-cluster, else $KUBECONFIG or
    ~/.kube/config; NoCredentials naming what was tried when there are none."""
    if kubeconfig is None:
        found = in_cluster()
        if found is not None:
            return found
    try:
        return from_kubeconfig(path=kubeconfig)
    except Exception as exc:  # the kubernetes loader raises ConfigException, OSError or ValueError
        tried = f"--kubeconfig {kubeconfig}" if kubeconfig else \
            "no ServiceAccount token (not in a pod), $KUBECONFIG or ~/.kube/config"
        raise NoCredentials(f"a pool selects pods (spec.replicas.selector), so the router watches them, but it has "
                            f"no Kubernetes credentials: {tried} ({type(exc).__name__}: {exc})") from exc


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
        self.last_error = ""  # of the last failed list or watch, for a router that cannot start

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
                self.last_error = str(exc)
                log.warning("pool %s: pod watch failed (%s); the last replicas stay in use; again in %.1fs",
                            self.pool.key, exc, delay)
                await asyncio.sleep(delay)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                failures += 1
                delay = RETRY_S[min(failures, len(RETRY_S)) - 1]
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("pool %s: pod watch interrupted (%s: %s); the last replicas stay in use; again in %.1fs",
                            self.pool.key, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)


class ReplicaDiscovery:
    """The replicas of a config's pools: watched for selector pools, the config's own for static ones. A
    ReplicaSource (router/scheduling/pools.py): the router passes it to its Scheduler and Scraper, and calls
    Scheduler.retain from `changed`.

    `update(config)` on every config swap starts watches for new selector pools, keeps those whose selector is
    unchanged (no relist on a policy edit) and stops the others. `version(key)` grows with each change of a pool's
    replicas, so a scheduler knows when to rebuild what it prepared for the pool.

    `api` may be a function that makes the client: it is then called on the first update that has a selector
    pool (never, in local mode with static replicas)."""

    def __init__(self, api: KubeApi | Callable[[], KubeApi], changed: Changed | None = None):
        self._api = api
        self.on_change = changed
        self._watches: dict[str, tuple[PodSelector, PoolWatch, asyncio.Task]] = {}
        self._replicas: dict[str, tuple[Replica, ...]] = {}
        self._versions: dict[str, int] = {}
        self._first: dict[str, asyncio.Event] = {}

    @property
    def api(self) -> KubeApi:
        if not isinstance(self._api, KubeApi):
            self._api = self._api()
        return self._api

    @property
    def connected(self) -> bool:
        return isinstance(self._api, KubeApi)

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
        """Raises NoCredentials, before changing anything, when the config brings the first selector pool and the
        client cannot be made."""
        wanted = {key: pool for key, pool in config.pools.items() if pool.selector is not None}
        api = self.api if wanted else None
        for key in list(self._watches):
            selector, _, task = self._watches[key]
            if key not in wanted or wanted[key].selector != selector:
                task.cancel()
                del self._watches[key]
                self._replicas.pop(key, None)
                self._first.pop(key, None)
        for key, pool in wanted.items():
            if key not in self._watches:
                assert api is not None
                watch = PoolWatch(api, pool, self._changed)
                self._first.setdefault(key, asyncio.Event())
                self._watches[key] = (pool.selector, watch, asyncio.create_task(watch.run(), name=f"pods {key}"))

    async def listed(self, timeout_s: float = 10.0) -> bool:
        """Wait until every watched pool has been listed once (a router should not serve before); False on timeout."""
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._first.values())), timeout_s)
        except TimeoutError:
            return False
        return True

    def unlisted(self) -> list[str]:
        """'pool: last error' for every watched pool not listed yet."""
        return [f"{key}: {watch.last_error or 'no answer yet'}" for key, (_, watch, _) in self._watches.items()
                if watch.replicas is None]

    async def stop(self) -> None:
        tasks = [task for _, _, task in self._watches.values()]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.connected:
            await self.api.close()
