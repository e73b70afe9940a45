"""Priority-ordered boolean decisions over the signals that fired."""

from __future__ import annotations

import functools
from collections.abc import Callable

from switchpoint.config.model import AllRule, AnyRule, Decision, NotRule, Policy, Rule, SignalRule
from switchpoint.router.frozen import frozen


def describe_rule(rule: Rule) -> str:
    match rule:
        case SignalRule(signal):
            return signal
        case AllRule(rules):
            return "all(" + ", ".join(describe_rule(r) for r in rules) + ")"
        case AnyRule(rules):
            return "any(" + ", ".join(describe_rule(r) for r in rules) + ")"
        case NotRule(inner):
            return f"not({describe_rule(inner)})"
    raise TypeError(f"unknown rule type {type(rule).__name__}")


Predicate = Callable[[Callable[[str], bool]], bool]


def compile_rule(rule: Rule) -> Predicate:
    """The rule as nested closures, built once per policy: no per-node type dispatch per request."""
    match rule:
        case SignalRule(signal):
            return lambda fired: fired(signal)
        case AllRule(rules):
            parts = tuple(compile_rule(r) for r in rules)
            return lambda fired: all(p(fired) for p in parts)
        case AnyRule(rules):
            parts = tuple(compile_rule(r) for r in rules)
            return lambda fired: any(p(fired) for p in parts)
        case NotRule(inner):
            test = compile_rule(inner)
            return lambda fired: not test(fired)
    raise TypeError(f"unknown rule type {type(rule).__name__}")


@functools.lru_cache(maxsize=64)
def compiled_decisions(policy: Policy) -> tuple[tuple[Decision, Predicate, str], ...]:
    """A policy's decisions with their compiled rules and the reason a match gives; cached per policy object
    (configs are immutable)."""
    return tuple((d, compile_rule(d.rule), f"decision '{d.name}' (priority {d.priority}) matched "
                  f"{describe_rule(d.rule)}") for d in policy.decisions if d.rule is not None)


@frozen
class DecisionOutcome:
    decision: Decision
    reason: str
    # (decision name, matched) for each decision evaluated, highest priority first, up to the winner
    evaluated: tuple[tuple[str, bool], ...]


def decide(policy: Policy, fired: Callable[[str], bool]) -> DecisionOutcome:
    """The first decision, by descending priority, whose rule holds; else the policy's default."""
    evaluated = []
    for decision, test, reason in compiled_decisions(policy):
        matched = test(fired)
        evaluated.append((decision.name, matched))
        if matched:
            if len(evaluated) > 1:
                reason += f"; {len(evaluated) - 1} higher-priority decision(s) did not match"
            return DecisionOutcome(decision, reason, tuple(evaluated))
    reason = "no decision matched; using the default" if evaluated else "the policy has no decisions; using the default"
    return DecisionOutcome(policy.default, reason, tuple(evaluated))
