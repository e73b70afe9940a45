"""Writing a Plan to the API: create what is missing, patch what drifted, delete orphans, update statuses.

Idempotent: every desired object carries a hash of itself, and an object whose
live hash matches is not touched, so a restarted operator (or a second pass)
converges without duplicates and without writes.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from switchpoint.operator.kube import BY_KIND, PODS, ApiError, KubeApi
from switchpoint.operator.labels import APPLIED_HASH, CONFIG_DIGEST, object_hash
from switchpoint.operator.observed import Body, Observed, owner_name
from switchpoint.operator.plan import Plan

log = logging.getLogger("switchpoint.operator")


@dataclass
class Applied:
    created: int = 0
    patched: int = 0
    deleted: int = 0
    statuses: int = 0
    nudged: int = 0

    def __bool__(self) -> bool:
        return bool(self.created or self.patched or self.deleted or self.statuses or self.nudged)


def stamped(obj: Body) -> Body:
    """The desired object with the hash of its content in an annotation."""
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[APPLIED_HASH] = object_hash(obj)
    return out


def merge_patch(live: Body, desired: Body) -> Body:
    """A JSON merge patch that makes `live` match `desired` in everything the operator owns.
    ConfigMap keys the operator no longer writes are removed (null); other fields are left to their owners
    (spec.replicas under an HPA, fields the API server defaults)."""
    patch = copy.deepcopy(desired)
    if desired.get("kind") == "ConfigMap":
        for key in (live.get("data") or {}):
            patch["data"].setdefault(key, None)
    return patch


async def apply_plan(api: KubeApi, plan: Plan, observed: Observed) -> Applied:
    done = Applied()
    ns = plan.namespace
    for obj in plan.apply:
        desired = stamped(obj)
        kind, name = obj["kind"], obj["metadata"]["name"]
        resource = BY_KIND[kind]
        live = observed.live(kind, name)
        if live is None:
            try:
                await api.create(resource, ns, desired)
                done.created += 1
                log.info("%s %s/%s created", kind, ns, name)
                continue
            except ApiError as exc:
                if exc.status != 409:
                    raise
                live = await api.get(resource, ns, name)
                if live is None or owner_name(live) != obj["metadata"]["ownerReferences"][0]["name"]:
                    log.error("%s %s/%s exists and is not owned by RoutingPolicy %s: left alone", kind, ns, name,
                              obj["metadata"]["ownerReferences"][0]["name"])
                    continue
        if ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH) == desired["metadata"][
                "annotations"][APPLIED_HASH]:
            continue
        await api.patch(resource, ns, name, merge_patch(live, desired))
        done.patched += 1
        log.info("%s %s/%s updated", kind, ns, name)
    for ref in plan.delete:
        await api.delete(BY_KIND[ref.kind], ref.namespace, ref.name)
        done.deleted += 1
        log.info("%s %s/%s deleted (its RoutingPolicy is gone or no longer needs it)", ref.kind, ns, ref.name)
    for update in plan.statuses:
        resource = next(r for r in BY_KIND.values() if r.plural == update.plural)
        try:
            await api.patch(resource, ns, update.name, {"status": update.status}, sub="status")
            done.statuses += 1
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise
    for pod, digest in plan.nudges:
        body: dict[str, Any] = {"metadata": {"annotations": {CONFIG_DIGEST: digest}}}
        try:
            await api.patch(PODS, ns, pod, body)
            done.nudged += 1
        except ApiError as exc:
            if exc.status == 403:
                log.warning("cannot annotate router pod %s/%s (%s): the routers get config %s at the kubelet's "
                            "next sync (about a minute); grant 'patch pods' or pass --no-nudge", ns, pod, exc, digest)
            elif exc.status != 404:
                raise
    return done
