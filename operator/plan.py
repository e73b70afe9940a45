"""Reconcile logic as a pure function: one namespace's observed state -> desired objects and statuses.

The operator compiles with the same compiler as local mode (`compile_manifests`):
once for the whole namespace, to find every problem and attribute it to the
object and field at fault, and once per accepted policy, over exactly the
manifests its routers will load (the policy, the pools it uses as written, and
the budgets that apply to it).

Selector pools reach the routers with their selectors: routers watch the pods
themselves (router/discovery.py), so pod churn changes no ConfigMap and writes
nothing to router pods. The operator still reads the pods, for ModelPool status.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from switchpoint.config.compiler import compile_manifests
from switchpoint.config.errors import ConfigError, Problem
from switchpoint.config.manifests import Manifest
from switchpoint.operator.conditions import ACCEPTED, CONFLICTED, READY, RESOLVED_REFS, Condition, merge_conditions
from switchpoint.operator.discovery import discover
from switchpoint.operator.labels import (
    API_VERSION,
    CONFIG_DIGEST,
    INSTANCE,
    config_map_name,
    router_name,
    selector_labels,
)
from switchpoint.operator.objects import router_objects
from switchpoint.operator.observed import Body, Observed, owner_name
from switchpoint.operator.settings import RouterSettings, for_policy
from switchpoint.operator.spend import format_amount

SOURCE = "cluster"
REF_FIELD = re.compile(r"(\.pools\[\d+\]\.(pool|model)|^spec\.policy|^spec\.scope\.name"
                       r"|^spec\.onExhausted\.downgradeTo)$")
PLURALS = {"ModelPool": "modelpools", "RoutingPolicy": "routingpolicies", "Budget": "budgets"}


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class StatusUpdate:
    plural: str
    name: str
    status: dict[str, Any]


@dataclass
class Plan:
    namespace: str
    apply: list[Body] = field(default_factory=list)  # desired objects, created or patched to match
    delete: list[ObjectRef] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)  # only those that differ from the live status
    # Router pods to annotate with the config digest after a policy edit: the kubelet then refreshes their
    # ConfigMap volume now instead of at its next periodic sync (up to about a minute). Pod churn changes no config.
    nudges: list[tuple[str, str]] = field(default_factory=list)  # (pod name, digest)
    config_changed: bool = False  # a ConfigMap will be rewritten: look again shortly, to nudge the pods


@dataclass
class _PolicyOutcome:
    accepted: bool
    digest: str | None = None
    objects: list[Body] = field(default_factory=list)


def manifest(body: Body, spec: dict[str, Any] | None = None) -> Manifest:
    """The CR as the compiler (and the router's config file) sees it: no status, no server-side metadata."""
    meta = body.get("metadata") or {}
    obj: dict[str, Any] = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", ""),
                           "metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", "default")}}
    if spec is not None or "spec" in body:
        obj["spec"] = spec if spec is not None else body["spec"]
    return Manifest(SOURCE, obj)


def compile_problems(manifests: list[Manifest]) -> dict[str, list[Problem]]:
    """Every problem of these manifests, by object ("Kind ns/name")."""
    try:
        compile_manifests(manifests)
    except ConfigError as exc:
        grouped: dict[str, list[Problem]] = {}
        for problem in exc.problems:
            grouped.setdefault(problem.obj, []).append(problem)
        return grouped
    return {}


def describe(problems: list[Problem] | list[tuple[str, str]]) -> str:
    parts = [f"{p.field}: {p.message}" if isinstance(p, Problem) else f"{p[0]}: {p[1]}" for p in problems]
    return "; ".join(parts)


def _ref(body: Body) -> str:
    meta = body["metadata"]
    return f"{body.get('kind')} {meta.get('namespace', 'default')}/{meta['name']}"


def _age_key(body: Body) -> tuple[str, str]:
    meta = body["metadata"]
    return (str(meta.get("creationTimestamp") or ""), str(meta["name"]))


def pool_refs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, pool name) of every pool a policy names."""
    refs = []
    for i, decision in enumerate(spec.get("decisions") or ()):
        for j, candidate in enumerate(decision.get("pools") or ()):
            refs.append((f"spec.decisions[{i}].pools[{j}].pool", str(candidate.get("pool"))))
    for j, candidate in enumerate((spec.get("default") or {}).get("pools") or ()):
        refs.append((f"spec.default.pools[{j}].pool", str(candidate.get("pool"))))
    return refs


def indistinguishable_decisions(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Decisions whose rule is identical to a higher-priority one: they can never win."""
    ranked = sorted(enumerate(spec.get("decisions") or ()), key=lambda d: -int(d[1].get("priority", 0)))
    first: dict[str, tuple[int, dict[str, Any]]] = {}
    found = []
    for index, decision in ranked:
        rule = json.dumps(decision.get("when"), sort_keys=True)
        if rule in first:
            winner_index, winner = first[rule]
            found.append((f"spec.decisions[{index}].when",
                          f"same rule as spec.decisions[{winner_index}] ('{winner.get('name')}', priority "
                          f"{winner.get('priority')}), so decision '{decision.get('name')}' can never win"))
        else:
            first[rule] = (index, decision)
    return found


def budget_applies(budget_spec: dict[str, Any], policy: str) -> bool:
    if budget_spec.get("policy") not in (None, policy):
        return False
    scope = budget_spec.get("scope") or {}
    return scope.get("type") != "Policy" or scope.get("name") == policy


def _ref_reason(problems: list[Problem]) -> str:
    text = problems[0].message
    if "own namespace" in text:
        return "CrossNamespaceRef"
    if "does not serve" in text:
        return "ModelNotServed"
    if text.startswith("unknown ModelPool"):
        return "PoolNotFound"
    if text.startswith("unknown RoutingPolicy"):
        return "PolicyNotFound"
    return "RefNotAccepted"


def config_yaml(manifests: list[Manifest]) -> str:
    header = "# Compiled by the Switchpoint operator; edits are overwritten. Source: the CRs of this namespace.\n"
    return header + yaml.safe_dump_all([m.obj for m in manifests], sort_keys=False)


class _Planner:
    def __init__(self, observed: Observed, defaults: RouterSettings, timestamp: str, nudge: bool):
        self.o = observed
        self.nudge = nudge
        self.defaults = defaults
        self.timestamp = timestamp
        self.plan = Plan(observed.namespace)
        policies = sorted(observed.policies, key=_age_key)  # the oldest claim on an alias wins
        self.problems = compile_problems([manifest(b) for b in (*observed.pools, *policies, *observed.budgets)])
        self.policies = policies
        self.pools = {b["metadata"]["name"]: b for b in observed.pools}
        self.invalid_pools = {name for name, b in self.pools.items() if _ref(b) in self.problems}
        self.discovery = {name: discover(b["spec"]["replicas"], observed.pods) for name, b in self.pools.items()
                          if name not in self.invalid_pools and "selector" in b["spec"]["replicas"]}
        self.enforced_by: dict[str, list[str]] = {}

    def run(self) -> Plan:
        outcomes = {b["metadata"]["name"]: self.policy(b) for b in self.policies}
        for body in self.o.pools:
            self.pool_status(body)
        for body in self.o.budgets:
            self.budget_status(body)
        self.deletions(outcomes)
        return self.plan

    # -- RoutingPolicy ----------------------------------------------------------------------------

    def policy(self, body: Body) -> _PolicyOutcome:
        meta, spec = body["metadata"], body.get("spec") or {}
        name = meta["name"]
        own = self.problems.get(_ref(body), [])
        aliases = [p for p in own if p.field.startswith("spec.aliases")]
        refs = [p for p in own if REF_FIELD.search(p.field)]
        refs += [Problem(SOURCE, _ref(body), path, f"ModelPool '{pool}' is not accepted (its status says why)")
                 for path, pool in pool_refs(spec) if pool in self.invalid_pools]
        invalid: list[Any] = [p for p in own if p not in aliases and p not in refs]
        settings, annotation_problems = for_policy(self.defaults, meta.get("annotations") or {})
        invalid += annotation_problems
        outcome = _PolicyOutcome(accepted=not (aliases or refs or invalid))
        if outcome.accepted:
            outcome = self.program(body, settings, invalid)
        conditions = [self.accepted_condition(outcome.accepted, aliases, refs, invalid)]
        conditions.append(Condition(RESOLVED_REFS, False, _ref_reason(refs), describe(refs)) if refs else
                          Condition(RESOLVED_REFS, True, "ResolvedRefs", "every referenced ModelPool is accepted"))
        clashes = [(p.field, p.message) for p in aliases] + indistinguishable_decisions(spec)
        conditions.append(Condition(CONFLICTED, True, "AliasConflict" if aliases else "IndistinguishableDecisions",
                                    describe(clashes)) if clashes else
                          Condition(CONFLICTED, False, "NoConflicts", "no alias or decision conflicts"))
        conditions.append(self.ready_condition(name, outcome, settings))
        deployment = self.o.live("Deployment", router_name(name)) or {}
        config = self.o.live("ConfigMap", config_map_name(name)) or {}
        digest = outcome.digest or ((config.get("metadata") or {}).get("annotations") or {}).get(CONFIG_DIGEST)
        status: dict[str, Any] = {"decisions": len(spec.get("decisions") or ()),
                                  "readyRouters": int((deployment.get("status") or {}).get("readyReplicas") or 0)}
        if digest:
            status["configDigest"] = digest
        self.status(body, status, conditions)
        return outcome

    def program(self, body: Body, settings: RouterSettings, invalid: list[Any]) -> _PolicyOutcome:
        """Compile exactly what this policy's routers will load, and build their objects."""
        name = body["metadata"]["name"]
        budgets = [b for b in self.o.budgets
                   if _ref(b) not in self.problems and budget_applies(b.get("spec") or {}, name)]
        used = {pool for _, pool in pool_refs(body.get("spec") or {})}
        used |= {b["spec"]["onExhausted"]["downgradeTo"] for b in budgets
                 if (b["spec"].get("onExhausted") or {}).get("downgradeTo")}
        pools = [manifest(self.pools[p]) for p in sorted(used) if p in self.pools]
        manifests = [manifest(body), *pools, *(manifest(b) for b in budgets)]
        try:
            config = compile_manifests(manifests)
        except ConfigError as exc:  # not expected after the namespace-wide compile; reported, never deployed
            invalid.extend(p for p in exc.problems if p.obj == _ref(body))
            return _PolicyOutcome(accepted=False)
        for b in budgets:
            self.enforced_by.setdefault(b["metadata"]["name"], []).append(name)
        watches_pods = any(pool.selector is not None for pool in config.pools.values())
        objects = router_objects(body, settings, config_yaml(manifests), config.digest, watches_pods)
        self.plan.apply.extend(objects)
        self.nudge_routers(name, config.digest)
        return _PolicyOutcome(True, config.digest, objects)

    def nudge_routers(self, policy: str, digest: str) -> None:
        """Nudge only once the ConfigMap already holds this digest: a nudge in the same pass could make the
        kubelet sync before its watch has seen the new ConfigMap."""
        live = self.o.live("ConfigMap", config_map_name(policy)) or {}
        if ((live.get("metadata") or {}).get("annotations") or {}).get(CONFIG_DIGEST) != digest:
            self.plan.config_changed = True
            return
        if not self.nudge:
            return
        for pod in self.o.router_pods:
            meta = pod.get("metadata") or {}
            if (meta.get("labels") or {}).get(INSTANCE) != selector_labels(policy)[INSTANCE]:
                continue
            if (meta.get("annotations") or {}).get(CONFIG_DIGEST) != digest and not meta.get("deletionTimestamp"):
                self.plan.nudges.append((meta["name"], digest))

    def accepted_condition(self, accepted: bool, aliases: list[Problem], refs: list[Problem],
                           invalid: list[Any]) -> Condition:
        if accepted:
            return Condition(ACCEPTED, True, "Accepted", "compiled; the routers get this config")
        if invalid:
            return Condition(ACCEPTED, False, "Invalid", describe(invalid))
        if aliases:
            return Condition(ACCEPTED, False, "AliasConflict", describe(aliases))
        return Condition(ACCEPTED, False, "UnresolvedRefs", describe(refs))

    def ready_condition(self, name: str, outcome: _PolicyOutcome, settings: RouterSettings) -> Condition:
        deployment = self.o.live("Deployment", router_name(name))
        ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
        wanted = int(((deployment or {}).get("spec") or {}).get("replicas") or settings.replicas)
        if not outcome.accepted:
            if deployment is None:
                return Condition(READY, False, "NotAccepted", "no routers: this policy has never been accepted")
            return Condition(READY, False, "NotAccepted",
                             f"{ready} router(s) keep serving the last accepted config; fix the problems above")
        if deployment is None or ready == 0:
            return Condition(READY, False, "RoutersNotReady", f"0/{wanted} router(s) ready")
        return Condition(READY, True, "RoutersReady", f"{ready}/{wanted} router(s) ready, config {outcome.digest}")

    # -- ModelPool and Budget ----------------------------------------------------------------------

    def pool_status(self, body: Body) -> None:
        own = self.problems.get(_ref(body), [])
        name = body["metadata"]["name"]
        replicas = (body.get("spec") or {}).get("replicas") or {}
        if own:
            conditions = [Condition(ACCEPTED, False, "Invalid", describe(own)),
                          Condition(RESOLVED_REFS, False, "Invalid", "not checked: the pool is invalid"),
                          Condition(READY, False, "Invalid", "not served: the pool is invalid")]
            self.status(body, {"readyReplicas": 0, "replicasByRole": {}}, conditions)
            return
        found = self.discovery.get(name)
        if found is None:
            static = replicas.get("static") or []
            by_role: dict[str, int] = {}
            for r in static:
                by_role[r.get("role", "both")] = by_role.get(r.get("role", "both"), 0) + 1
            conditions = [Condition(ACCEPTED, True, "Accepted", "valid"),
                          Condition(RESOLVED_REFS, True, "StaticReplicas", f"{len(static)} static endpoint(s)"),
                          Condition(READY, True, "StaticReplicas", "static endpoints are taken as declared")]
            self.status(body, {"readyReplicas": len(static), "replicasByRole": by_role}, conditions)
            return
        selector = json.dumps(replicas.get("selector") or {}, sort_keys=True)
        conditions = [Condition(ACCEPTED, True, "Accepted", "valid")]
        if found.selected == 0:
            conditions.append(Condition(RESOLVED_REFS, False, "NoPodsSelected",
                                        f"spec.replicas.selector {selector} matches no pod in namespace "
                                        f"'{self.o.namespace}'"))
        else:
            conditions.append(Condition(RESOLVED_REFS, True, "PodsSelected", f"{found.selected} pod(s) selected"))
        decoders = sum(1 for r in found.ready if r.role != "prefill")
        note = f"; ignored role label values: {', '.join(found.unknown_roles)}" if found.unknown_roles else ""
        if decoders:
            conditions.append(Condition(READY, True, "ReplicasReady",
                                        f"{len(found.ready)} ready replica(s), {decoders} can decode{note}"))
        else:
            conditions.append(Condition(READY, False, "NoReadyReplicas",
                                        f"{len(found.ready)} ready replica(s), none can decode{note}"))
        self.status(body, {"readyReplicas": len(found.ready), "replicasByRole": found.by_role()}, conditions)

    def budget_status(self, body: Body) -> None:
        own = self.problems.get(_ref(body), [])
        refs = [p for p in own if REF_FIELD.search(p.field)]
        invalid = [p for p in own if p not in refs]
        conditions = [Condition(ACCEPTED, False, "Invalid", describe(invalid)) if invalid else
                      Condition(ACCEPTED, True, "Accepted", "valid")]
        conditions.append(Condition(RESOLVED_REFS, False, _ref_reason(refs), describe(refs)) if refs else
                          Condition(RESOLVED_REFS, True, "ResolvedRefs", "every reference resolves"))
        fields: dict[str, Any] = {}
        spend = self.o.spend.get(f"{self.o.namespace}/{body['metadata']['name']}")
        if spend is not None:
            fields = {"spent": format_amount(spend.spent), "remaining": format_amount(spend.remaining)}
            if spend.window_ends:
                fields["windowEnds"] = spend.window_ends
        enforcers = self.enforced_by.get(body["metadata"]["name"], [])
        if enforcers:
            conditions.append(Condition(READY, True, "Enforced",
                                        f"enforced by the routers of RoutingPolicy {', '.join(sorted(enforcers))}"))
        else:
            conditions.append(Condition(READY, False, "NotEnforced",
                                        "no accepted RoutingPolicy in this namespace applies this budget"))
        self.status(body, fields, conditions)

    # -- common ----------------------------------------------------------------------------------

    def status(self, body: Body, fields: dict[str, Any], conditions: list[Condition]) -> None:
        meta = body["metadata"]
        generation = meta.get("generation")
        current = body.get("status") or {}
        wanted = {**fields, "conditions": merge_conditions(current.get("conditions"), conditions, generation,
                                                           self.timestamp)}
        if generation is not None:
            wanted["observedGeneration"] = generation
        if any(current.get(k) != v for k, v in wanted.items()):
            self.plan.statuses.append(StatusUpdate(PLURALS[body["kind"]], meta["name"], wanted))

    def deletions(self, outcomes: dict[str, _PolicyOutcome]) -> None:
        """Objects of deleted policies, and objects an accepted policy no longer needs (an HPA turned off).
        A policy that is not accepted keeps its routers: they serve the last accepted config."""
        for obj in self.o.managed:
            owner = owner_name(obj)
            outcome = outcomes.get(owner or "")
            if outcome is not None and not outcome.accepted:
                continue
            wanted = outcome.objects if outcome else []
            if any(w["kind"] == obj["kind"] and w["metadata"]["name"] == obj["metadata"]["name"] for w in wanted):
                continue
            meta = obj["metadata"]
            self.plan.delete.append(ObjectRef(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]))


def plan_namespace(observed: Observed, defaults: RouterSettings, timestamp: str, nudge: bool = True) -> Plan:
    """Desired router objects, status updates and deletions for one namespace (no I/O)."""
    return _Planner(observed, defaults, timestamp, nudge).run()
