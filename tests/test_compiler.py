"""The compiler: valid manifests compile; every kind of bad manifest gets a problem naming file, object and field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.config.compiler import compile_manifests, load_config
from switchpoint.config.errors import ConfigError
from switchpoint.config.manifests import Manifest, load_manifests
from switchpoint.config.model import AllRule, AnyRule, NotRule, Role, SignalRule

from .conftest import EXAMPLES


def example_objects() -> dict[str, dict[str, Any]]:
    objs = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            objs[doc["metadata"]["name"]] = doc
    return objs


def compile_objs(objs: dict[str, dict[str, Any]]):
    return compile_manifests([Manifest(f"{name}.yaml", obj) for name, obj in objs.items()])


def test_examples_compile_into_the_typed_config():
    config = load_config([EXAMPLES])
    assert set(config.aliases) == {"auto", "switchpoint/auto", "smart", "switchpoint/smart"}
    smart = config.policies["default/smart"]
    assert {c.source for c in smart.classifiers} == {"builtin:jailbreak", "builtin:domain", "builtin:difficulty"}
    assert smart.default.cache.enabled and smart.default.cache.ttl_seconds == 600
    policy = config.policies["default/auto"]
    assert [d.name for d in policy.decisions] == ["agentic", "long-documents", "coding", "math-reasoning", "premium"]
    math = next(d for d in policy.decisions if d.name == "math-reasoning")
    assert math.rule == AllRule((AnyRule((SignalRule("math-words"), SignalRule("arithmetic"))),
                                 NotRule(SignalRule("short-question"))))
    large = config.pools["default/large-reasoning"]
    assert [r.role for r in large.static_replicas] == [Role.PREFILL, Role.DECODE, Role.DECODE]
    assert config.pools["default/small-chat"].hardware_class == "nvidia-l4"
    assert config.direct["meta-llama/Llama-3.1-8B-Instruct"].candidates[0].pool.name == "small-chat"
    assert {b.name for b in config.budgets} == {"acme-daily-tokens", "per-tenant-monthly-spend", "trial-tenant-tokens"}


def test_schema_defaults_fill_what_the_user_left_out():
    config = load_config([EXAMPLES])
    signals = {s.name: s for s in config.policies["default/auto"].signals}
    assert signals["code"].case_sensitive is False  # keywords.caseSensitive default
    assert config.policies["default/auto"].default.selection.algorithm == "static"
    budget = next(b for b in config.budgets if b.name == "acme-daily-tokens")
    assert budget.failure_policy == "Open" and budget.team_header == "x-switchpoint-team"


def test_digest_ignores_file_order_and_formatting():
    objs = example_objects()
    forward = compile_objs(objs).digest
    backward = compile_objs(dict(reversed(list(objs.items())))).digest
    assert forward == backward
    objs["small-chat"]["spec"]["contextTokens"] = 4096
    assert compile_objs(objs).digest != forward


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(objs: dict) -> None:
        name, *keys = path.split(".")
        target = objs[name]
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return mutate


_DELETE = object()

BAD_MANIFESTS = [
    # (what, mutation, object, field, message fragment)
    ("unknown signal in a nested rule", _set("auto.spec.decisions.3.when.all.0.any.1.signal", "arithmatic"),
     "RoutingPolicy default/auto", "spec.decisions[3].when.all[0].any[1].signal", "unknown signal 'arithmatic'"),
    ("unknown pool", _set("auto.spec.decisions.0.pools.0.pool", "giant"),
     "RoutingPolicy default/auto", "spec.decisions[0].pools[0].pool", "unknown ModelPool 'giant'"),
    ("pool in another namespace", _set("auto.spec.default.pools.0.pool", "prod/small-chat"),
     "RoutingPolicy default/auto", "spec.default.pools[0].pool", "only use pools of its own namespace"),
    ("model the pool does not serve", _set("auto.spec.default.pools.0.model", "gpt-5"),
     "RoutingPolicy default/auto", "spec.default.pools[0].model", "does not serve model 'gpt-5'"),
    ("rule with two operators", _set("auto.spec.decisions.2.when", {"signal": "code", "not": {"signal": "agent"}}),
     "RoutingPolicy default/auto", "spec.decisions[2].when", "exactly one of signal, all, any, not"),
    ("nested rule with an unknown operator", _set("auto.spec.decisions.3.when.all.1", {"nor": [{"signal": "code"}]}),
     "RoutingPolicy default/auto", "spec.decisions[3].when.all[1]", "exactly one of signal, all, any, not"),
    ("empty nested list", _set("auto.spec.decisions.3.when.all.0", {"any": []}),
     "RoutingPolicy default/auto", "spec.decisions[3].when.all[0].any", "non-empty list"),
    ("two decisions with one priority", _set("auto.spec.decisions.1.priority", 300),
     "RoutingPolicy default/auto", "spec", "priorities must be unique"),
    ("signal of two kinds", _set("auto.spec.signals.0.tenant", {"in": ["x"]}),
     "RoutingPolicy default/auto", "spec.signals[0]", "exactly one of keywords"),
    ("token range without bounds", _set("auto.spec.signals.3.contextTokens", {}),
     "RoutingPolicy default/auto", "spec.signals[3].contextTokens", "set min, max or both"),
    ("min above max", _set("auto.spec.signals.3.contextTokens", {"min": 10, "max": 5}),
     "RoutingPolicy default/auto", "spec.signals[3].contextTokens", "min must not exceed max"),
    ("invalid regular expression", _set("auto.spec.signals.2.regex.patterns.0", "(unclosed"),
     "RoutingPolicy default/auto", "spec.signals[2].regex.patterns[0]", "invalid regular expression"),
    ("missing required field", _set("auto.spec.default", _DELETE),
     "RoutingPolicy default/auto", "spec.default", "required field is missing"),
    ("wrong type", _set("auto.spec.decisions.0.priority", "high"),
     "RoutingPolicy default/auto", "spec.decisions[0].priority", "is not of type 'integer'"),
    ("value out of range", _set("small-chat.spec.contextTokens", 0),
     "ModelPool default/small-chat", "spec.contextTokens", "less than the minimum"),
    ("engine chunk out of range", _set("auto.spec.scheduling", [{"pool": "small-chat", "chunkTokens": 8}]),
     "RoutingPolicy default/auto", "spec.scheduling[0].chunkTokens", "less than the minimum"),
    ("unknown field", _set("small-chat.spec.gpus", 8),
     "ModelPool default/small-chat", "spec.gpus", "unknown field"),
    ("bad enum", _set("large-reasoning.spec.replicas.static.0.role", "encode"),
     "ModelPool default/large-reasoning", "spec.replicas.static[0].role", "is not one of"),
    ("bad address", _set("small-chat.spec.replicas.static.0.address", "http://x"),
     "ModelPool default/small-chat", "spec.replicas.static[0].address", "does not match"),
    ("selector and static together", _set("small-chat.spec.replicas.selector", {"matchLabels": {"a": "b"}}),
     "ModelPool default/small-chat", "spec.replicas", "exactly one of replicas.selector and replicas.static"),
    ("downgrade without a target", _set("per-tenant-monthly-spend.spec.onExhausted", {"action": "Downgrade"}),
     "Budget default/per-tenant-monthly-spend", "spec", "downgradeTo is required"),
    ("downgrade to an unknown pool", _set("per-tenant-monthly-spend.spec.onExhausted.downgradeTo", "tiny"),
     "Budget default/per-tenant-monthly-spend", "spec.onExhausted.downgradeTo", "unknown ModelPool 'tiny'"),
    ("budget for an unknown policy", _set("per-tenant-monthly-spend.spec.policy", "manual"),
     "Budget default/per-tenant-monthly-spend", "spec.policy", "unknown RoutingPolicy 'manual'"),
    ("tokens and money at once", _set("acme-daily-tokens.spec.limit.amount", 5),
     "Budget default/acme-daily-tokens", "spec.limit", "exactly one of limit.tokens and limit.amount"),
    ("window too short", _set("acme-daily-tokens.spec.window.duration", "5s"),
     "Budget default/acme-daily-tokens", "spec.window.duration", "outside 30s..366d"),
    ("scope without a name", _set("acme-daily-tokens.spec.scope", {"type": "Tenant"}),
     "Budget default/acme-daily-tokens", "spec.scope", "scope.name is required"),
    ("unsupported version", _set("small-chat.apiVersion", "switchpoint.dev/v2"),
     "ModelPool default/small-chat", "apiVersion", "unsupported version 'v2'"),
    ("unknown kind in the group", _set("small-chat.kind", "ModelFarm"),
     "ModelFarm default/small-chat", "kind", "unknown kind"),
]


@pytest.mark.parametrize(("what", "mutate", "obj", "field", "fragment"), BAD_MANIFESTS,
                         ids=[b[0] for b in BAD_MANIFESTS])
def test_bad_manifest_names_the_object_and_field(what, mutate, obj, field, fragment):
    objs = copy.deepcopy(example_objects())
    mutate(objs)
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    matching = [p for p in caught.value.problems if p.obj == obj and p.field == field and fragment in p.message]
    assert matching, f"{what}: got {[str(p) for p in caught.value.problems]}"
    assert matching[0].source.endswith(".yaml")


def test_two_policies_claiming_one_alias_conflict():
    objs = example_objects()
    second = copy.deepcopy(objs["auto"])
    second["metadata"]["name"] = "other"
    second["spec"]["aliases"] = ["gpt-4o", "auto"]
    objs["other"] = second
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    [problem] = caught.value.problems
    assert problem.obj == "RoutingPolicy default/other" and problem.field == "spec.aliases[1]"
    assert "already claimed by RoutingPolicy default/auto" in problem.message


def test_every_problem_is_reported_not_just_the_first():
    objs = example_objects()
    objs["auto"]["spec"]["decisions"][0]["pools"][0]["pool"] = "nope"
    objs["auto"]["spec"]["decisions"][2]["when"] = {"signal": "nope"}
    objs["small-chat"]["spec"]["gpus"] = 1
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    assert len(caught.value.problems) >= 3


@pytest.mark.parametrize(("content", "fragment"), [
    ("just a string\n", "not a Kubernetes manifest: expected a mapping, found str"),
    ("- a\n- b\n", "expected a mapping, found list"),
    ("kind: ModelPool\nmetadata: {name: x}\n", "missing apiVersion"),
    ("apiVersion: switchpoint.dev/v1alpha1\nkind: ModelPool\n", "missing metadata.name"),
    ("apiVersion: v1\nkind: [unclosed\n", "not valid YAML"),
])
def test_a_file_that_is_not_a_manifest_is_refused(tmp_path: Path, content: str, fragment: str):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    _, problems = load_manifests([path])
    assert problems and fragment in problems[0].message
    assert problems[0].source.startswith(str(path))


def test_yaml_errors_carry_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n")
    _, problems = load_manifests([path])
    assert problems[0].source.startswith(f"{path}:")


def test_objects_of_other_api_groups_are_skipped(tmp_path: Path):
    (tmp_path / "app.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n")
    for example in EXAMPLES.glob("*.yaml"):
        (tmp_path / example.name).write_text(example.read_text())
    assert load_config([tmp_path]).digest == load_config([EXAMPLES]).digest


def test_missing_paths_and_empty_folders_are_problems(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="no manifest files found"):
        load_config([tmp_path])


def test_an_object_defined_twice_is_refused(tmp_path: Path):
    pools = (EXAMPLES / "pools.yaml").read_text()
    (tmp_path / "a.yaml").write_text(pools)
    (tmp_path / "b.yaml").write_text(pools)
    with pytest.raises(ConfigError, match="defined twice"):
        load_config([tmp_path])


def test_an_invalid_object_is_reported_once_not_at_every_reference():
    objs = example_objects()
    objs["large-reasoning"]["spec"]["replicas"]["static"][0]["role"] = "encode"
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    assert [(p.obj, p.field) for p in caught.value.problems] == [
        ("ModelPool default/large-reasoning", "spec.replicas.static[0].role")]


def test_workload_thresholds_come_from_the_policy():
    objs = example_objects()
    objs["auto"]["spec"]["workload"] = {"agentHeader": "X-Agent", "prefillHeavyRatio": 1, "warmPrefixShare": 0.9}
    rules = compile_objs(objs).policies["default/auto"].workload
    assert (rules.agent_header, rules.prefill_heavy_ratio, rules.default_output_tokens, rules.warm_prefix_share) == (
        "x-agent", 1.0, 256, 0.9)


def test_a_pools_engine_chunk_reaches_its_candidates_scheduling():
    objs = example_objects()
    objs["auto"]["spec"]["scheduling"] = [{"pool": "large-reasoning", "chunkTokens": 512},
                                          {"pool": "small-chat", "prefillTokensPerSecond": 9000}]
    policy = compile_objs(objs).policies["default/auto"]
    chunks = {c.pool.name: c.scheduling.chunk_tokens for d in policy.decisions for c in d.candidates}
    assert chunks == {"large-reasoning": 512, "small-chat": 2048}  # 2048: the CRD's default, vLLM's
