"""One compiler from CR manifests to the router's typed config.

Local mode runs it on the YAML files a user would `kubectl apply`; the operator
runs it on the objects it watches. It is a pure function of the manifests:
every problem is collected (not just the first) and names the file, the object
and the field path.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from switchpoint.config import schema
from switchpoint.config.errors import ConfigError, Problem, field_path
from switchpoint.config.manifests import GROUP, KINDS, VERSION, Manifest, load_manifests
from switchpoint.config.model import (
    BUILTIN_CLASSIFIERS,
    DEFAULT_DECISION,
    DIRECT_DECISION,
    AllRule,
    AnyRule,
    Budget,
    CacheConfig,
    Candidate,
    ClassifierSignal,
    ClassifierSpec,
    Decision,
    KeywordSignal,
    MetadataSignal,
    MetricsConfig,
    NotRule,
    Objective,
    PiiSignal,
    PodSelector,
    Policy,
    Pool,
    Pricing,
    RegexSignal,
    Replica,
    Role,
    RouterConfig,
    Rule,
    SchedulingConfig,
    SelectionConfig,
    Signal,
    SignalRule,
    SimilaritySignal,
    TenantSignal,
    TextScope,
    TokenCount,
    TokenRangeSignal,
    ToolsSignal,
    WorkloadRules,
)

RULE_KEYS = ("signal", "all", "any", "not")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_WINDOW_S, MAX_WINDOW_S = 30, 366 * 86400
NO_QUALITY_ALGORITHMS = ("static", "weighted")  # selections whose evidence carries no predicted quality


def load_config(paths: list[str | Path]) -> RouterConfig:
    """Read and compile the manifests at the paths; raises ConfigError naming every problem."""
    manifests, problems = load_manifests(paths)
    if problems:
        raise ConfigError(problems)
    return compile_manifests(manifests)


def compile_manifests(manifests: list[Manifest]) -> RouterConfig:
    problems: list[Problem] = []
    accepted = _validated(manifests, problems)
    pools: dict[str, Pool] = {}
    for m, spec in accepted["ModelPool"]:
        pools[f"{m.namespace}/{m.name}"] = _pool(m, spec)
    defined = {m.ref for m in manifests}
    policies: dict[str, Policy] = {}
    for m, spec in accepted["RoutingPolicy"]:
        policy = _Reporter(m, problems, defined).policy(spec, pools)
        if policy is not None:
            policies[policy.key] = policy
    aliases = _aliases(accepted["RoutingPolicy"], problems)
    budgets = tuple(
        b for m, spec in accepted["Budget"] if (b := _Reporter(m, problems, defined).budget(spec, pools, policies))
    )
    if problems:
        raise ConfigError(problems)
    return RouterConfig(
        pools=pools,
        policies=policies,
        aliases={alias: policies[key] for alias, key in aliases.items()},
        direct=_direct_decisions(pools),
        budgets=budgets,
        digest=_digest(manifests),
    )


def _validated(manifests: list[Manifest], problems: list[Problem]) -> dict[str, list[tuple[Manifest, dict]]]:
    """Schema-check every object; returns the defaulted specs of the valid ones, by kind."""
    accepted: dict[str, list[tuple[Manifest, dict]]] = {kind: [] for kind in KINDS}
    seen: dict[str, str] = {}
    for m in manifests:
        version = str(m.obj["apiVersion"]).split("/", 1)[-1]
        if m.kind not in KINDS:
            expected = ", ".join(KINDS)
            problems.append(Problem(m.source, m.ref, "kind", f"unknown kind in {GROUP} (expected one of {expected})"))
            continue
        resource = schema.schema_for(m.kind, version)
        if resource is None:
            message = f"unsupported version '{version}' (expected {VERSION})"
            problems.append(Problem(m.source, m.ref, "apiVersion", message))
            continue
        if m.ref in seen:
            problems.append(Problem(m.source, m.ref, "metadata.name", f"defined twice (also in {seen[m.ref]})"))
            continue
        seen[m.ref] = m.source
        defaulted, violations = schema.validate(resource, m.obj)
        problems.extend(Problem(m.source, m.ref, v.path, v.message) for v in violations)
        if not violations:
            accepted[m.kind].append((m, defaulted["spec"]))
    return accepted


def _pool(m: Manifest, spec: dict[str, Any]) -> Pool:
    replicas = spec["replicas"]
    selector = None
    if "selector" in replicas:
        sel = replicas["selector"]
        selector = PodSelector(
            match_labels=tuple(sorted((sel.get("matchLabels") or {}).items())),
            match_expressions=tuple(
                (e["key"], e["operator"], tuple(e.get("values") or ())) for e in sel.get("matchExpressions") or ()
            ),
            port=replicas["port"],
            role_label=replicas["roleLabel"],
        )
    price = spec["pricing"]
    metrics = None
    if "metrics" in spec:
        raw = spec["metrics"]
        names = raw.get("names") or {}
        defaults = MetricsConfig()
        metrics = MetricsConfig(
            path=raw["path"], port=raw.get("port"), interval_ms=raw["intervalMs"], stale_after_ms=raw["staleAfterMs"],
            failures_to_unready=raw["failuresToUnready"],
            waiting=tuple(names.get("waiting") or defaults.waiting),
            running=tuple(names.get("running") or defaults.running),
            kv_usage=tuple(names.get("kvUsage") or defaults.kv_usage),
        )
    return Pool(
        namespace=m.namespace,
        name=m.name,
        models=tuple(model["name"] for model in spec["models"]),
        hardware_class=spec["hardwareClass"],
        context_tokens=spec["contextTokens"],
        pricing=Pricing(price["inputPerMillionTokens"], price["outputPerMillionTokens"], price["currency"]),
        static_replicas=tuple(Replica(r["address"], Role(r["role"])) for r in replicas.get("static") or ()),
        selector=selector,
        metrics=metrics,
    )


def _direct_decisions(pools: dict[str, Pool]) -> dict[str, Decision]:
    """A request may name a served model instead of an alias: it goes to the pools serving that model."""
    serving: dict[str, list[Candidate]] = {}
    for key in sorted(pools):
        for model in pools[key].models:
            serving.setdefault(model, []).append(Candidate(pools[key], model))
    return {model: Decision(DIRECT_DECISION, -1, None, tuple(cands)) for model, cands in serving.items()}


def _aliases(policies: list[tuple[Manifest, dict]], problems: list[Problem]) -> dict[str, str]:
    owner: dict[str, tuple[Manifest, str]] = {}
    for m, spec in policies:
        for i, alias in enumerate(spec["aliases"]):
            if alias in owner and owner[alias][0].ref != m.ref:
                first = owner[alias][0]
                problems.append(
                    Problem(m.source, m.ref, f"spec.aliases[{i}]",
                            f"alias '{alias}' is already claimed by {first.ref} ({first.source})")
                )
            else:
                owner.setdefault(alias, (m, f"{m.namespace}/{m.name}"))
    return {alias: key for alias, (_, key) in owner.items()}


class _Reporter:
    """Compiles the spec of one object, recording problems against it."""

    def __init__(self, manifest: Manifest, problems: list[Problem], defined: set[str]):
        self.m = manifest
        self.problems = problems
        self.defined = defined  # every object present, valid or not
        self.ok = True

    def fail(self, path: tuple[str | int, ...], message: str) -> None:
        self.ok = False
        self.problems.append(Problem(self.m.source, self.m.ref, field_path(("spec", *path)), message))

    def dangling(self, path: tuple[str | int, ...], kind: str, name: str, known: list[str]) -> None:
        """A reference to an object that did not compile. If the object exists but is itself invalid,
        its own problems already say why: the referrer fails without repeating them."""
        ns = self.m.namespace
        if f"{kind} {ns}/{name}" in self.defined:
            self.ok = False
        else:
            listed = ", ".join(sorted(known)) or "none"
            self.fail(path, f"unknown {kind} '{name}' in namespace '{ns}' (known: {listed})")

    # -- RoutingPolicy ---------------------------------------------------------------------------

    def policy(self, spec: dict[str, Any], pools: dict[str, Pool]) -> Policy | None:
        declared = {c["name"]: _classifier_spec(c, i) for i, c in enumerate(spec.get("classifiers") or ())}
        scan_chars = spec["textScan"]["maxChars"]
        signals = tuple(s for i, raw in enumerate(spec.get("signals") or ()) if (s := self.signal(raw, i, scan_chars)))
        names = {raw["name"] for raw in spec.get("signals") or ()}
        classifiers = self.used_classifiers(signals, declared)
        self.scheduling = self.scheduling_configs(spec.get("scheduling") or (), pools)
        decisions = []
        for i, raw in enumerate(spec.get("decisions") or ()):
            rule = self.rule(raw["when"], ("decisions", i, "when"), names)
            candidates = self.candidates(raw["pools"], ("decisions", i, "pools"), pools)
            decisions.append(
                Decision(raw["name"], raw["priority"], rule, candidates,
                         self.selection(raw["selection"], candidates, ("decisions", i, "selection")),
                         raw.get("description", ""), _cache_config(raw["cache"]),
                         self.objective(raw, spec, ("decisions", i)))
            )
        candidates = self.candidates(spec["default"]["pools"], ("default", "pools"), pools)
        default = Decision(
            DEFAULT_DECISION, -1, None, candidates,
            self.selection(spec["default"]["selection"], candidates, ("default", "selection")),
            cache=_cache_config(spec["default"]["cache"]),
            objective=self.objective(spec["default"], spec, ("default",)),
        )
        if not self.ok:
            return None
        return Policy(
            namespace=self.m.namespace,
            name=self.m.name,
            aliases=tuple(spec["aliases"]),
            signals=signals,
            decisions=tuple(sorted(decisions, key=lambda d: -d.priority)),
            default=default,
            workload=WorkloadRules(
                agent_header=spec["workload"]["agentHeader"].lower(),
                prefill_heavy_ratio=float(spec["workload"]["prefillHeavyRatio"]),
                default_output_tokens=spec["workload"]["defaultOutputTokens"],
                warm_prefix_share=float(spec["workload"]["warmPrefixShare"]),
            ),
            classifiers=classifiers,
        )

    def used_classifiers(self, signals: tuple[Signal, ...],
                         declared: dict[str, ClassifierSpec]) -> tuple[ClassifierSpec, ...]:
        """The classifiers the signals name: declared ones, else built-in ones; unknown names are problems."""
        used: dict[str, ClassifierSpec] = {}
        for i, signal in enumerate(signals):
            if not isinstance(signal, ClassifierSignal):
                continue
            name = signal.classifier
            found = declared.get(name) or (ClassifierSpec(name, f"builtin:{name}") if name in BUILTIN_CLASSIFIERS
                                           else None)
            if found is None:
                known = ", ".join(sorted({*declared, *BUILTIN_CLASSIFIERS}))
                self.fail(("signals", i, "classifier", "name"),
                          f"unknown classifier '{name}' (declare it in spec.classifiers; known: {known})")
                continue
            used[name] = found
        return tuple(used.values())

    def selection(self, raw: dict[str, Any], candidates: tuple[Candidate, ...],
                  path: tuple[str | int, ...]) -> SelectionConfig:
        weights = tuple(float(w) for w in raw.get("weights") or ())
        if raw["algorithm"] == "weighted" and candidates and len(weights) != len(candidates):
            self.fail((*path, "weights"), f"weighted selection needs one weight per candidate pool: "
                                          f"{len(weights)} weight(s) for {len(candidates)} pool(s)")
        if weights and not any(weights):
            self.fail((*path, "weights"), "at least one weight must be above 0")
        return SelectionConfig(
            algorithm=raw["algorithm"], weights=weights, lam=raw.get("lambda"),
            target_quality_share=raw.get("targetQualityShare"), dataset=raw.get("dataset"), k=raw["k"],
            encoder=raw["encoder"], exploration=float(raw["exploration"]),
        )

    def objective(self, decision: dict[str, Any], spec: dict[str, Any],
                  path: tuple[str | int, ...]) -> Objective | None:
        """The decision's objective, else the policy's (spec.objective); None when neither states one.

        maxQualityLoss bounds a trade of predicted quality: a decision whose own objective sets it must select
        with an algorithm that predicts quality (a policy-wide one is simply unused by static decisions)."""
        raw = decision.get("objective")
        if raw is None:
            raw = spec.get("objective")
        elif "maxQualityLoss" in raw and decision["selection"]["algorithm"] in NO_QUALITY_ALGORITHMS:
            self.fail((*path, "objective", "maxQualityLoss"),
                      f"{decision['selection']['algorithm']} selection predicts no quality to trade: maxQualityLoss "
                      "needs cost-quality, knn or bandit (a static decision spills in declared order)")
        if raw is None:
            return None
        return Objective(raw.get("ttftMs"), raw.get("tpotMs"),
                         None if raw.get("maxQualityLoss") is None else float(raw["maxQualityLoss"]))

    def signal(self, raw: dict[str, Any], index: int, scan_chars: int) -> Signal | None:
        name = raw["name"]
        path = ("signals", index)
        if "keywords" in raw:
            kw = raw["keywords"]
            case = kw["caseSensitive"]
            terms = tuple(dict.fromkeys(t if case else t.lower() for t in kw["terms"]))
            return KeywordSignal(name, terms, kw["match"] == "all", case, TextScope(kw["scope"]), scan_chars)
        if "regex" in raw:
            rx = raw["regex"]
            compiled = []
            for j, pattern in enumerate(rx["patterns"]):
                try:
                    compiled.append(re.compile(pattern, 0 if rx["caseSensitive"] else re.IGNORECASE))
                except re.error as exc:
                    self.fail((*path, "regex", "patterns", j), f"invalid regular expression: {exc}")
            if len(compiled) != len(rx["patterns"]):
                return None
            return RegexSignal(name, tuple(compiled), rx["match"] == "all", TextScope(rx["scope"]), scan_chars)
        for counted in TokenCount:
            if counted.value in raw:
                bounds = raw[counted.value]
                return TokenRangeSignal(name, counted, bounds.get("min"), bounds.get("max"))
        if "metadata" in raw:
            md = raw["metadata"]
            values = frozenset(md["values"]) if "values" in md else None
            return MetadataSignal(name, md["key"].lower(), values)
        if "tenant" in raw:
            return TenantSignal(name, frozenset(raw["tenant"]["in"]))
        if "classifier" in raw:
            c = raw["classifier"]
            labels = tuple(dict.fromkeys(c["labels"])) if "labels" in c else None
            return ClassifierSignal(name, c["name"], labels, c.get("above"), TextScope(c["scope"]))
        if "pii" in raw:
            pii = raw["pii"]
            return PiiSignal(name, frozenset(pii["types"]) if pii.get("types") else None, TextScope(pii["scope"]))
        if "similarity" in raw:
            sim = raw["similarity"]
            return SimilaritySignal(name, tuple(sim["examples"]), float(sim["threshold"]), sim["encoder"],
                                    TextScope(sim["scope"]))
        return ToolsSignal(name, raw["tools"]["present"])

    def rule(self, raw: Any, path: tuple[str | int, ...], signals: set[str]) -> Rule:
        """Parse a nested boolean rule; nested levels are only schema-checked here (CRDs cannot recurse)."""
        keys = [k for k in RULE_KEYS if isinstance(raw, dict) and k in raw]
        extra = sorted(set(raw) - set(RULE_KEYS)) if isinstance(raw, dict) else []
        if not isinstance(raw, dict) or len(keys) != 1 or extra:
            detail = f" (unknown: {', '.join(extra)})" if extra else ""
            self.fail(path, f"a rule sets exactly one of signal, all, any, not{detail}")
            return SignalRule("")
        key = keys[0]
        value = raw[key]
        if key == "signal":
            if not isinstance(value, str) or value not in signals:
                known = ", ".join(sorted(signals)) or "none"
                self.fail((*path, "signal"), f"unknown signal '{value}' (defined: {known})")
            return SignalRule(str(value))
        if key == "not":
            return NotRule(self.rule(value, (*path, "not"), signals))
        if not isinstance(value, list) or not value:
            self.fail((*path, key), f"'{key}' takes a non-empty list of rules")
            return SignalRule("")
        rules = tuple(self.rule(sub, (*path, key, i), signals) for i, sub in enumerate(value))
        return AllRule(rules) if key == "all" else AnyRule(rules)

    def candidates(self, raw: list[dict], path: tuple[str | int, ...], pools: dict[str, Pool]) -> tuple[Candidate, ...]:
        out = []
        for i, ref in enumerate(raw):
            name = ref["pool"]
            if "/" in name:
                self.fail((*path, i, "pool"), f"pool '{name}': a policy may only use pools of its own namespace "
                                              f"'{self.m.namespace}' (give the name alone)")
                continue
            pool = pools.get(f"{self.m.namespace}/{name}")
            if pool is None:
                known = [p.name for p in pools.values() if p.namespace == self.m.namespace]
                self.dangling((*path, i, "pool"), "ModelPool", name, known)
                continue
            model = ref.get("model") or pool.models[0]
            if model not in pool.models:
                self.fail((*path, i, "model"), f"pool '{name}' does not serve model '{model}' "
                                               f"(it serves: {', '.join(pool.models)})")
                continue
            out.append(Candidate(pool, model, self.scheduling.get(name, SchedulingConfig())))
        return tuple(out)

    def scheduling_configs(self, raw: list[dict], pools: dict[str, Pool]) -> dict[str, SchedulingConfig]:
        configs = {}
        for i, entry in enumerate(raw):
            if f"{self.m.namespace}/{entry['pool']}" not in pools:
                known = [p.name for p in pools.values() if p.namespace == self.m.namespace]
                self.dangling(("scheduling", i, "pool"), "ModelPool", entry["pool"], known)
                continue
            configs[entry["pool"]] = SchedulingConfig(
                profile=entry["profile"],
                weights=tuple((s["name"], float(s["weight"])) for s in entry.get("scorers") or ()),
                min_uncached_tokens=entry["disaggregation"]["minUncachedTokens"],
                prefill_tokens_per_second=float(entry["prefillTokensPerSecond"]),
                chunk_tokens=int(entry["chunkTokens"]),
            )
        return configs

    # -- Budget ----------------------------------------------------------------------------------

    def budget(self, spec: dict[str, Any], pools: dict[str, Pool], policies: dict[str, Policy]) -> Budget | None:
        window = _window_seconds(spec["window"]["duration"])
        if not MIN_WINDOW_S <= window <= MAX_WINDOW_S:
            self.fail(("window", "duration"), f"window {spec['window']['duration']} is outside 30s..366d")
        ns = self.m.namespace
        known_policies = [p.name for p in policies.values() if p.namespace == ns]
        known_pools = [p.name for p in pools.values() if p.namespace == ns]
        policy = spec.get("policy")
        if policy is not None and f"{ns}/{policy}" not in policies:
            self.dangling(("policy",), "RoutingPolicy", policy, known_policies)
        scope = spec["scope"]
        if scope["type"] == "Policy" and f"{ns}/{scope['name']}" not in policies:
            self.dangling(("scope", "name"), "RoutingPolicy", scope["name"], known_policies)
        action = spec["onExhausted"]
        target = action.get("downgradeTo")
        if target is not None and f"{ns}/{target}" not in pools:
            self.dangling(("onExhausted", "downgradeTo"), "ModelPool", target, known_pools)
        if not self.ok:
            return None
        limit = spec["limit"]
        return Budget(
            namespace=ns,
            name=self.m.name,
            scope_type=scope["type"],
            scope_name=scope.get("name"),
            team_header=scope["teamHeader"].lower(),
            policy=policy,
            window_seconds=window,
            window_reset=spec["window"]["reset"],
            limit_tokens=limit.get("tokens"),
            token_type=limit["tokenType"],
            limit_amount=limit.get("amount"),
            action=action["action"],
            downgrade_to=target,
            failure_policy=spec["failurePolicy"],
        )


def _classifier_spec(raw: dict[str, Any], index: int) -> ClassifierSpec:
    return ClassifierSpec(raw["name"], raw["source"], tuple(sorted((raw.get("thresholds") or {}).items())),
                          raw["onError"], raw["timeoutMs"], index)


def _cache_config(raw: dict[str, Any]) -> CacheConfig:
    return CacheConfig(
        enabled=raw["enabled"], similarity_threshold=float(raw["similarityThreshold"]),
        ttl_seconds=_window_seconds(raw["ttl"]), max_entry_bytes=raw["maxEntryBytes"],
        store_truncated=raw["storeTruncated"], store_pii=raw["storePii"], encoder=raw["encoder"],
        target_precision=float(raw["targetPrecision"]),
    )


def _window_seconds(duration: str) -> int:
    return int(duration[:-1]) * DURATION_UNITS[duration[-1]]


def _digest(manifests: list[Manifest]) -> str:
    """A digest of what the config means, independent of file order and formatting."""
    canonical = sorted(
        json.dumps({"kind": m.kind, "ns": m.namespace, "name": m.name, "spec": m.obj.get("spec")}, sort_keys=True)
        for m in manifests
    )
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:16]


