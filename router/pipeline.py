"""The deciding half of the request path, stage by stage, one span per stage.

Stages: workload class → decision (with the signals it needs, computed lazily) → selection among the
decision's candidates → replica scheduling. The pipeline decides; it does not admit: the core
(router/core/core.py) runs the cache and budget stages after it and records the request in the
in-flight ledger, so `switchpoint route` explains a decision with this same code without side effects.
Every call takes the snapshot the request started with (config, models, selectors).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

from opentelemetry import trace

from switchpoint.config.model import DIRECT_DECISION, Candidate, Decision, Policy, Pool, WorkloadRules
from switchpoint.router.decision import DecisionOutcome, decide
from switchpoint.router.frozen import frozen
from switchpoint.router.refusals import FailedPrecondition, NotFound
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selecting import BanditFeedback, Selectors, candidate_models, feedback
from switchpoint.router.selection import Selection, select_static
from switchpoint.router.selectors import Ranking, SelectionRequest, Selector, selection_algorithm
from switchpoint.router.signals.neural import RequestInference, SignalInference
from switchpoint.router.signals.rules import Inferred, NeedsInference, NeuralSignal, SignalBoard, SignalResult
from switchpoint.router.workload import Workload, classify, with_cache_state

if TYPE_CHECKING:
    from switchpoint.router.core.snapshot import Snapshot


@frozen
class RouteResult:
    request: RouteInput
    policy: Policy | None  # None for a request that named a served model directly
    workload: Workload
    board: SignalBoard  # the signals computed to reach the decision
    outcome: DecisionOutcome
    selection: Selection
    inference: RequestInference  # embeddings and classifier outputs computed for the request
    ranking: Ranking | None = None  # the selection algorithm's order and evidence (not for static)
    bandit: BanditFeedback | None = None  # what a bandit needs from this request's Report

    @property
    def fired(self) -> tuple[str, ...]:
        return self.board.fired_names

    @property
    def signals(self) -> tuple[SignalResult, ...]:
        return self.board.results()

    @property
    def policy_name(self) -> str:
        return self.policy.key if self.policy else ""


class RoutePipeline:
    def __init__(self, scheduler: Scheduler, tracer: trace.Tracer, inference: SignalInference | None = None):
        self.scheduler = scheduler
        self.tracer = tracer
        self.inference = inference

    async def route(self, snapshot: Snapshot, req: RouteInput, all_signals: bool = False) -> RouteResult:
        """Decide for one request. Signals are computed as decisions need them, or all with all_signals."""
        config = snapshot.config
        policy = config.aliases.get(req.model)
        direct = None if policy else config.direct.get(req.model)
        if policy is None and direct is None:
            known = ", ".join((sorted(config.aliases) + sorted(config.direct))[:20])
            raise NotFound(f"model '{req.model[:100]}' is neither a policy alias nor a served model (known: {known})")
        # Child spans only under a recording (sampled, exported) parent: they cost ~5 us each otherwise.
        stage = self.tracer.start_as_current_span if trace.get_current_span().is_recording() else _untraced
        with stage("switchpoint.workload") as span:
            rules = policy.workload if policy else DEFAULT_WORKLOAD_RULES
            workload = classify(req, rules)
            span.set_attribute("switchpoint.workload", workload.label)
        with stage("switchpoint.decision") as span:
            board = SignalBoard(policy.signals if policy else (), req)
            state = RequestInference(snapshot.models)
            if policy is None:
                outcome = _direct_outcome(direct)
            else:
                if all_signals:
                    board.evaluate_rules()
                    for signal in board.pending():
                        board.record(signal.name, await self._infer(policy, signal, req, state))
                outcome = await self._decide(policy, board, req, state)
            if span.is_recording():
                span.set_attribute("switchpoint.signals.fired", list(board.fired_names))
                if board.degraded:
                    span.set_attribute("switchpoint.signals.degraded", list(board.degraded))
                span.set_attributes({f"switchpoint.signal.{s.name}": s.evidence for s in board.results()})
            span.set_attribute("switchpoint.decision", outcome.decision.name)
            span.set_attribute("switchpoint.decision.reason", outcome.reason)
        with stage("switchpoint.placement") as span:
            decision, ranking, selector, qualities = outcome.decision, None, None, None
            span.set_attribute("switchpoint.selection.algorithm", decision.selection.algorithm)
            if policy is not None and decision.selection.algorithm != "static":
                selector, ranking = await self._rank(snapshot.selectors, policy, decision, req, state)
                candidates = tuple(decision.candidates[i] for i in ranking.order)
                decision = replace(decision, candidates=candidates)
                qualities = tuple(c.quality for c in ranking.evidence.candidates)
                if span.is_recording():
                    span.set_attributes(ranking.evidence.attributes())
            selection = select_static(decision, req, self.scheduler, qualities)
            span.set_attribute("switchpoint.pool", selection.candidate.pool.name)
            span.set_attribute("switchpoint.replica", selection.placement.replica.address)
            if selection.predicted:
                if span.is_recording():
                    span.set_attributes(placement_attributes(selection))
                outcome = replace(outcome, reason=f"{outcome.reason}; {selection.note()}")
            workload = with_cache_state(workload, rules, req.input_tokens, selection.placement.uncached_tokens)
        return RouteResult(req, policy, workload, board, outcome, selection, state, ranking,
                           feedback(ranking, selector, selection.candidate.model))

    async def _rank(self, selectors: Selectors, policy: Policy, decision: Decision, req: RouteInput,
                    state: RequestInference) -> tuple[Selector, Ranking]:
        selector = selectors.selector(policy, decision)
        if selector is None:
            raise FailedPrecondition(f"decision '{decision.name}' selects with {decision.selection.algorithm}, "
                             "which this router has not prepared")
        embedding = None
        if selection_algorithm(decision.selection.algorithm).needs_embedding and self.inference is not None:
            try:
                embedding = await self.inference.embedding(state, decision.selection.encoder, req.last_user_text,
                                                           SELECTION_EMBED_TIMEOUT_MS)
            except Exception:  # a late or failed embedding: the selectors use the dataset means and say so
                embedding = None
        expected = req.max_tokens or policy.workload.default_output_tokens
        return selector, selector.rank(candidate_models(decision),
                                       SelectionRequest(req.input_tokens, expected, embedding, req.request_id))

    async def _decide(self, policy: Policy, board: SignalBoard, req: RouteInput,
                      state: RequestInference) -> DecisionOutcome:
        """The decisions in priority order; a classifier signal they reach is computed, then they are checked
        again (signals already computed are remembered, so each runs at most once)."""
        while True:
            try:
                return decide(policy, board.fired)
            except NeedsInference as need:
                board.record(need.signal.name, await self._infer(policy, need.signal, req, state))

    async def _infer(self, policy: Policy, signal: NeuralSignal, req: RouteInput,
                     state: RequestInference) -> Inferred:
        if self.inference is None:
            raise FailedPrecondition(f"signal '{signal.name}' needs a classifier, and this router runs without models")
        return await self.inference.infer(policy, signal, req, state)


_UNTRACED = contextlib.nullcontext(trace.INVALID_SPAN)
SELECTION_EMBED_TIMEOUT_MS = 200
DEFAULT_WORKLOAD_RULES = WorkloadRules()


def downgraded(result: RouteResult, pool: Pool, why: str, scheduler: Scheduler) -> RouteResult:
    """The same decision, sent to a cheaper pool instead (a Downgrade budget is spent)."""
    decision = replace(result.outcome.decision, candidates=(Candidate(pool, pool.models[0]),))
    selection = select_static(decision, result.request, scheduler)
    reason = f"{result.outcome.reason}; downgraded to pool '{pool.name}': {why}"
    outcome = replace(result.outcome, decision=decision, reason=reason)
    return replace(result, outcome=outcome, selection=selection)


def placement_attributes(selection: Selection) -> dict[str, str | float | bool]:
    """The joint decision's evidence as span attributes: the objective, each candidate's predicted TTFT."""
    out: dict[str, str | float | bool] = {"switchpoint.placement.spilled": selection.spilled}
    if selection.objective is not None and selection.objective.ttft_ms is not None:
        out["switchpoint.objective.ttft_ms"] = selection.objective.ttft_ms
    for p in selection.predicted:
        out[f"switchpoint.placement.predicted_ttft_ms.{p.pool}"] = round(p.prediction.ttft_ms, 1)
        if p.prediction.saturated:
            out[f"switchpoint.placement.saturated.{p.pool}"] = True
    if selection.skipped:
        out["switchpoint.placement.passed_over"] = "; ".join(selection.skipped)
    return out


def _untraced(_: str) -> contextlib.AbstractContextManager[trace.Span]:
    return _UNTRACED


def _direct_outcome(decision: Decision | None) -> DecisionOutcome:
    assert decision is not None and decision.name == DIRECT_DECISION
    return DecisionOutcome(decision, "the request names a served model; routed to the pools serving it", ())
