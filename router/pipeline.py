"""The request pipeline of DESIGN.md, stage by stage, one span per stage.

Stages so far: workload class → signals → decision → pool selection and replica
scheduling. The pipeline decides; it does not admit: the service records the
decision in the in-flight ledger, so `switchpoint route` can explain a decision
with this same code without side effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from opentelemetry import trace
from switchpoint.router.decision import DecisionOutcome, decide
from switchpoint.router.errors import RouteError
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling import LeastInflightScheduler
from switchpoint.router.selection import Selection, select_static
from switchpoint.router.signals.rules import SignalResult, evaluate_signals
from switchpoint.router.workload import Workload, classify

from switchpoint.config.model import DIRECT_DECISION, Decision, Policy, RouterConfig


@dataclass(frozen=True)
class RouteResult:
    request: RouteInput
    policy: Policy | None  # None for a request that named a served model directly
    workload: Workload
    signals: tuple[SignalResult, ...]
    outcome: DecisionOutcome
    selection: Selection

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals if s.fired)

    @property
    def policy_name(self) -> str:
        return self.policy.key if self.policy else ""


class RoutePipeline:
    def __init__(self, scheduler: LeastInflightScheduler, tracer: trace.Tracer):
        self.scheduler = scheduler
        self.tracer = tracer

    def route(self, config: RouterConfig, req: RouteInput) -> RouteResult:
        policy = config.aliases.get(req.model)
        direct = None if policy else config.direct.get(req.model)
        if policy is None and direct is None:
            known = ", ".join((sorted(config.aliases) + sorted(config.direct))[:20])
            raise RouteError(grpc.StatusCode.NOT_FOUND,
                             f"model '{req.model[:100]}' is neither a policy alias nor a served model (known: {known})")
        tracer = self.tracer
        with tracer.start_as_current_span("switchpoint.workload") as span:
            workload = classify(req)
            span.set_attribute("switchpoint.workload", workload.label)
        with tracer.start_as_current_span("switchpoint.signals") as span:
            signals = evaluate_signals(policy.signals, req) if policy else ()
            fired = frozenset(s.name for s in signals if s.fired)
            span.set_attribute("switchpoint.signals.fired", sorted(fired))
        with tracer.start_as_current_span("switchpoint.decision") as span:
            outcome = decide(policy, fired) if policy else _direct_outcome(direct)
            span.set_attribute("switchpoint.decision", outcome.decision.name)
            span.set_attribute("switchpoint.decision.reason", outcome.reason)
        with tracer.start_as_current_span("switchpoint.placement") as span:
            span.set_attribute("switchpoint.selection.algorithm", outcome.decision.selection)
            selection = select_static(outcome.decision, req.context_tokens, self.scheduler)
            span.set_attribute("switchpoint.pool", selection.candidate.pool.name)
            span.set_attribute("switchpoint.replica", selection.placement.replica.address)
        return RouteResult(req, policy, workload, signals, outcome, selection)


def _direct_outcome(decision: Decision | None) -> DecisionOutcome:
    assert decision is not None and decision.name == DIRECT_DECISION
    return DecisionOutcome(decision, "the request names a served model; routed to the pools serving it", ())
