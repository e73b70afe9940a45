"""Decisions: boolean rules, priority order, the default, and that only needed signals are computed."""

from __future__ import annotations

import pytest

from switchpoint.config.compiler import load_config
from switchpoint.config.model import AllRule, AnyRule, NotRule, SignalRule
from switchpoint.router.decision import compile_rule, decide, describe_rule
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.signals.rules import SignalBoard

from .conftest import EXAMPLES

A, B, C = SignalRule("a"), SignalRule("b"), SignalRule("c")
RULES = [
    (A, {"a"}, True),
    (A, set(), False),
    (AllRule((A, B)), {"a", "b"}, True),
    (AllRule((A, B)), {"a"}, False),
    (AnyRule((A, B)), {"b"}, True),
    (AnyRule((A, B)), set(), False),
    (NotRule(A), set(), True),
    (AllRule((AnyRule((A, B)), NotRule(C))), {"b"}, True),
    (AllRule((AnyRule((A, B)), NotRule(C))), {"b", "c"}, False),
]


@pytest.mark.parametrize(("rule", "fired", "holds"), RULES,
                         ids=[f"{describe_rule(r)}|{sorted(f)}" for r, f, _ in RULES])
def test_rules_are_boolean_logic(rule, fired, holds):
    assert compile_rule(rule)(fired.__contains__) is holds


def route_input(text: str, **fields) -> RouteInput:
    return RouteInput(request_id="r", model="auto", messages=(ChatTurn("user", text),), **fields)


POLICY = load_config([EXAMPLES]).policies["default/auto"]
DECISIONS = [
    ("agent beats every lower priority", route_input("refactor python, prove it", tools_present=True), "agentic"),
    ("coding", route_input("Please refactor this Python function to be faster and clearer"), "coding"),
    ("math needs a non-short prompt",
     route_input("Prove that the square root of two is irrational, using a proof by contradiction."), "math-reasoning"),
    ("short arithmetic stays default", route_input("what is 12 * 13?"), "default"),
    ("premium tenant", route_input("hello there", tenant="acme"), "premium"),
    ("premium header", route_input("hello there", metadata={"x-priority": "high"}), "premium"),
    ("nothing matches", route_input("hello there"), "default"),
]


@pytest.mark.parametrize(("what", "req", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_the_highest_priority_matching_decision_wins(what, req, expected):
    outcome = decide(POLICY, SignalBoard(POLICY.signals, req).fired)
    assert outcome.decision.name == expected
    assert expected in outcome.reason or "default" in outcome.reason
    names = [name for name, _ in outcome.evaluated]
    assert names == [d.name for d in POLICY.decisions][: len(names)]


def test_a_decision_that_wins_early_leaves_later_signals_uncomputed():
    board = SignalBoard(POLICY.signals, route_input("hello", tools_present=True))
    assert decide(POLICY, board.fired).decision.name == "agentic"
    assert [r.name for r in board.results()] == ["agent"]


def test_workload_classes_follow_the_policy_thresholds():
    from switchpoint.config.model import WorkloadRules
    from switchpoint.router.workload import classify, with_cache_state

    rules = WorkloadRules(agent_header="x-agent", prefill_heavy_ratio=1.0, default_output_tokens=10)
    req = RouteInput(request_id="r", model="auto", messages=(ChatTurn("user", "word " * 50),),
                     metadata={"x-agent": "1"})
    workload = classify(req, rules)
    assert workload.label == "agent/single/prefill/cold"
    assert with_cache_state(workload, rules, 100, 40).label == "agent/single/prefill/warm"
    assert classify(req, WorkloadRules()).label == "chat/single/decode/cold"
