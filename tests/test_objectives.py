"""Latency objectives in RoutingPolicies: CRD fields, validation and compilation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from switchpoint.config.errors import ConfigError
from switchpoint.config.model import Objective

from .test_compiler import compile_objs, example_objects


def _auto(objs: dict[str, Any]) -> dict[str, Any]:
    return objs["auto"]["spec"]


def _decision(config, name: str):
    policy = config.policies["default/auto"]
    return policy.default if name == "default" else next(d for d in policy.decisions if d.name == name)


def test_a_decision_states_its_own_objective_and_the_others_take_the_policys():
    objs = copy.deepcopy(example_objects())
    spec = _auto(objs)
    spec["objective"] = {"ttftMs": 2000}
    coding = next(d for d in spec["decisions"] if d["name"] == "coding")
    coding["objective"] = {"ttftMs": 800, "tpotMs": 60}
    spec["default"]["objective"] = {"tpotMs": 40}
    config = compile_objs(objs)
    assert _decision(config, "coding").objective == Objective(800, 60, None)
    assert _decision(config, "agentic").objective == Objective(2000, None, None)
    assert _decision(config, "default").objective == Objective(None, 40, None)


def test_without_objectives_a_decision_has_none():
    objs = copy.deepcopy(example_objects())
    for d in _auto(objs)["decisions"]:
        d.pop("objective", None)
    _auto(objs).pop("objective", None)
    _auto(objs)["default"].pop("objective", None)
    config = compile_objs(objs)
    assert all(d.objective is None for d in (*config.policies["default/auto"].decisions,
                                              config.policies["default/auto"].default))


def test_max_quality_loss_compiles_for_a_learned_selection():
    objs = copy.deepcopy(example_objects())
    coding = next(d for d in _auto(objs)["decisions"] if d["name"] == "coding")
    coding["selection"] = {"algorithm": "cost-quality", "lambda": 10}
    coding["objective"] = {"ttftMs": 500, "maxQualityLoss": 0.05}
    assert _decision(compile_objs(objs), "coding").objective == Objective(500, None, 0.05)


BAD = [
    ("empty objective", {}, "spec.decisions[1].objective", "sets ttftMs, tpotMs or both"),
    ("zero ttft", {"ttftMs": 0}, "spec.decisions[1].objective.ttftMs", ""),
    ("ttft over ten minutes", {"ttftMs": 600001}, "spec.decisions[1].objective.ttftMs", ""),
    ("negative tpot", {"tpotMs": -5}, "spec.decisions[1].objective.tpotMs", ""),
    ("ttft as text", {"ttftMs": "fast"}, "spec.decisions[1].objective.ttftMs", ""),
    ("quality loss above 1", {"ttftMs": 500, "maxQualityLoss": 1.5}, "spec.decisions[1].objective.maxQualityLoss", ""),
    ("unknown field", {"ttftMs": 500, "p99": True}, "spec.decisions[1].objective.p99", "unknown field"),
    ("quality loss on a static decision", {"ttftMs": 500, "maxQualityLoss": 0.1},
     "spec.decisions[1].objective.maxQualityLoss", "static selection predicts no quality"),
]


@pytest.mark.parametrize(("what", "objective", "field", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_objective_is_refused_naming_the_field(what, objective, field, fragment):
    objs = copy.deepcopy(example_objects())
    _auto(objs)["decisions"][1]["objective"] = objective
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    found = [p for p in caught.value.problems if p.obj == "RoutingPolicy default/auto" and p.field == field
             and fragment in p.message]
    assert found, f"{what}: got {[str(p) for p in caught.value.problems]}"


def test_a_policy_wide_objective_is_validated_too():
    objs = copy.deepcopy(example_objects())
    _auto(objs)["objective"] = {"maxQualityLoss": 0.1}
    with pytest.raises(ConfigError) as caught:
        compile_objs(objs)
    assert any(p.field == "spec.objective" and "sets ttftMs, tpotMs or both" in p.message
               for p in caught.value.problems), [str(p) for p in caught.value.problems]
