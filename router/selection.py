"""Choosing the pool among a decision's candidates, and the fallbacks behind it.

The candidates come in the decision's order: declared for static, the selector's (best utility first:
quality - lambda x cost) for the learned algorithms. Without a latency objective the first candidate that
fits the request's context and has a ready replica wins. With a TTFT objective (the joint decision), each
candidate is placed on its best replica in that order and its TTFT predicted from live state
(router/scheduling/predict.py); a candidate is passed over only when it would miss the objective, and the
first that would meet it wins. A candidate whose predicted quality lies more than the objective's
maxQualityLoss below the selector's first choice is never taken for latency; one within it may take a request
early, while the first choice still meets the objective, when the first choice's quality lead does not pay for
the share of the pool's headroom the request's prefill would take (`_keeps`). When every candidate would
miss, the one predicted fastest wins (the objective is lost either way; the tail is cut). Every candidate's
prediction and the reason it was passed over are kept for `switchpoint route`, the Decision's reason and
the trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from switchpoint.config.model import Candidate, Decision, Objective, Replica
from switchpoint.router.frozen import frozen
from switchpoint.router.refusals import InvalidRequest, Unavailable
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.predict import Prediction, predict
from switchpoint.router.scheduling.scheduler import Placement, Scheduler

MAX_FALLBACKS = 4
QUALITY_EPS = 1e-9  # predicted qualities are means of labels: 0.9 - 0.2 must not fall below 0.7


@frozen
class Fallback:
    candidate: Candidate
    replica: Replica


@frozen
class Predicted:
    """One candidate placed and predicted for a decision with a TTFT objective."""

    pool: str
    replica: str
    prediction: Prediction
    quality: float | None  # the selector's predicted quality (None for static)


@frozen
class Selection:
    candidate: Candidate
    placement: Placement
    fallbacks: tuple[Fallback, ...]
    skipped: tuple[str, ...]  # why earlier candidates were passed over
    predicted: tuple[Predicted, ...] = ()  # candidates predicted (decisions with a TTFT objective), in order
    objective: Objective | None = None
    spilled: bool = False  # a candidate ahead in the order was passed over for its predicted latency

    @property
    def prediction(self) -> Prediction | None:
        """The chosen placement's prediction (decisions with a TTFT objective)."""
        pool = self.candidate.pool.name
        return next((p.prediction for p in self.predicted if p.pool == pool), None)

    def note(self) -> str:
        """What the objective changed, for the Decision's reason ("" when there is none)."""
        chosen = self.prediction
        if self.objective is None or self.objective.ttft_ms is None or chosen is None:
            return ""
        target = self.objective.ttft_ms
        head = f"TTFT objective {target} ms: pool '{self.candidate.pool.name}' predicted {chosen.ttft_ms:.0f} ms"
        passed = [f"'{p.pool}' {p.prediction.ttft_ms:.0f} ms" + (" (KV saturated)" if p.prediction.saturated else "")
                  for p in self.predicted if p.pool != self.candidate.pool.name]
        if not self.spilled:
            return head
        if chosen.misses(target / 1000):
            return f"{head}, the fastest; every candidate would miss it ({', '.join(passed)})"
        return f"{head}; passed over {', '.join(passed)}"


def select_static(decision: Decision, req: RouteInput, scheduler: Scheduler,
                  qualities: Sequence[float | None] | None = None) -> Selection:
    """The pool for this request among the decision's candidates, in their order (see the module docstring).

    qualities: the selector's predicted quality per candidate, in the same order (None for static)."""
    objective = decision.objective
    if objective is not None and objective.ttft_ms is not None:
        return _select_for_objective(decision, req, scheduler, objective, qualities)
    context_tokens = req.context_tokens
    chosen: tuple[Candidate, Placement] | None = None
    others: list[Fallback] = []
    skipped: list[str] = []
    for cand in decision.candidates:
        placement = _place(cand, req, scheduler, chosen is not None, skipped, others)
        if placement is not None:
            chosen = (cand, placement)
    if chosen is None:
        _refuse(decision, context_tokens, skipped)
    cand, placement = chosen
    return Selection(cand, placement, _fallbacks(cand, placement, others), tuple(skipped), objective=objective)


def _select_for_objective(decision: Decision, req: RouteInput, scheduler: Scheduler, objective: Objective,
                          qualities: Sequence[float | None] | None) -> Selection:
    assert objective.ttft_ms is not None
    target_s = objective.ttft_ms / 1000
    context_tokens = req.context_tokens
    quality = list(qualities) if qualities is not None else [None] * len(decision.candidates)
    floor = None
    if objective.max_quality_loss is not None and quality and quality[0] is not None:
        floor = quality[0] - objective.max_quality_loss - QUALITY_EPS
    placed: list[tuple[Candidate, Placement, Prediction]] = []
    predicted: list[Predicted] = []
    held: list[tuple[Candidate, Placement]] = []  # placeable but below the quality floor: only if nothing else
    others: list[Fallback] = []
    skipped: list[str] = []
    chosen: tuple[Candidate, Placement] | None = None
    for i, (cand, q) in enumerate(zip(decision.candidates, quality, strict=True)):
        placement = _place(cand, req, scheduler, chosen is not None, skipped, others)
        if placement is None:
            continue
        if floor is not None and q is not None and q < floor:
            held.append((cand, placement))
            skipped.append(f"pool '{cand.pool.name}': predicted quality {q:.3f} is more than maxQualityLoss "
                           f"{objective.max_quality_loss:g} below the first choice's {quality[0]:.3f}")
            continue
        prediction = predict(scheduler, cand, placement, req.input_tokens)
        predicted.append(Predicted(cand.pool.name, placement.replica.address, prediction, q))
        placed.append((cand, placement, prediction))
        if prediction.misses(target_s):
            skipped.append(f"pool '{cand.pool.name}': predicted TTFT {prediction.describe()} would miss the "
                           f"{objective.ttft_ms} ms objective")
            continue
        share = _lead_share(objective, quality, decision.candidates, req) if i == 0 else 1.0
        if share < 1.0 and not _keeps(prediction, share, target_s):
            skipped.append(f"pool '{cand.pool.name}': predicted TTFT {prediction.describe()}: its quality lead over "
                           f"the next candidate, {share:.0%} of maxQualityLoss {objective.max_quality_loss:g}, is "
                           f"worth less than the {prediction.prefill_s * 1e3:.0f} ms of prefill it would take of "
                           f"the {max(0.0, _headroom_s(prediction, target_s)) * 1e3:.0f} ms left under the "
                           f"objective")
            continue
        chosen = (cand, placement)
    if chosen is None and placed:  # every candidate would miss: the one predicted fastest
        cand, placement, _ = min(placed, key=lambda p: (p[2].saturated, p[2].ttft_s))
        chosen = (cand, placement)
    if chosen is None and held:
        chosen = held[0]
    if chosen is None:
        _refuse(decision, context_tokens, skipped)
    cand, placement = chosen
    first_placed = placed[0][0] if placed else None
    for other, other_placement, _ in placed:  # predicted but not chosen: their best replicas are good fallbacks
        if other is not cand and len(others) < MAX_FALLBACKS:
            others.insert(0, Fallback(other, other_placement.replica))
    return Selection(cand, placement, _fallbacks(cand, placement, others), tuple(skipped), tuple(predicted),
                     objective, spilled=first_placed is not None and first_placed is not cand)


def _lead_share(objective: Objective, quality: list[float | None], candidates: Sequence[Candidate],
                req: RouteInput) -> float:
    """The selector's first choice's quality lead over the best cheaper candidate behind it within maxQualityLoss,
    as a share of maxQualityLoss (in [0, 1]); 1 when there is no such candidate, when the first choice does not
    lead, or when nothing predicts quality (the first choice then keeps the request up to the objective)."""
    loss = objective.max_quality_loss
    lead = quality[0] if quality else None
    if not loss or lead is None:
        return 1.0
    output = max(0, req.context_tokens - req.input_tokens)
    price = candidates[0].pool.pricing.cost(req.input_tokens, output)
    cheaper = [q for c, q in zip(candidates[1:], quality[1:], strict=True)
               if q is not None and lead - loss - QUALITY_EPS <= q < lead
               and c.pool.pricing.cost(req.input_tokens, output) < price]
    return 1.0 if not cheaper else min(1.0, (lead - max(cheaper)) / loss)


def _keeps(prediction: Prediction, share: float, target_s: float) -> bool:
    """Whether the first choice keeps a request whose quality lead is `share` of maxQualityLoss.

    maxQualityLoss is the objective's exchange rate: the quality a request may give up to meet it, so the headroom
    a pool has left under the objective (the objective less the queue ahead of this request) is worth
    maxQualityLoss to the requests that will need it. The request takes its own prefill out of that headroom, and
    keeps the pool while its lead pays for the share it takes: lead >= maxQualityLoss x prefill / headroom. So a
    saturating pool sheds first the requests it improves least per second of its prefill (a long prompt it hardly
    improves before a short one), keeping its headroom for the requests that need it most, instead of serving
    them first come, first served. share 1 (a lead of maxQualityLoss or more) keeps it up to the objective.
    Called only for a prediction that meets the objective (so not KV-saturated)."""
    return prediction.prefill_s <= share * _headroom_s(prediction, target_s)


def _headroom_s(prediction: Prediction, target_s: float) -> float:
    """What the objective leaves once the queue ahead of this request (its prediction less its own prefill)."""
    return target_s - (prediction.ttft_s - prediction.prefill_s)


def _place(cand: Candidate, req: RouteInput, scheduler: Scheduler, decided: bool, skipped: list[str],
           others: list[Fallback]) -> Placement | None:
    """The candidate's placement, or None: its context is too small or it has no ready replica (the reason goes to
    `skipped`), or a candidate is already chosen (`decided`; it may then be a fallback, in `others`)."""
    context_tokens = req.context_tokens
    if cand.pool.context_tokens < context_tokens:
        skipped.append(f"pool '{cand.pool.name}': context {cand.pool.context_tokens} < {context_tokens} tokens needed")
        return None
    if decided:
        # a fallback only needs a ready replica: no scoring for pools the request will probably not use
        if len(others) < MAX_FALLBACKS and (replica := scheduler.fallback(cand)) is not None:
            others.append(Fallback(cand, replica))
        return None
    placement = scheduler.place(cand, req)
    if placement is None:
        skipped.append(f"pool '{cand.pool.name}': no ready replica")
    return placement


def _fallbacks(cand: Candidate, placement: Placement, others: list[Fallback]) -> tuple[Fallback, ...]:
    return tuple(([Fallback(cand, r) for r in placement.alternatives] + others)[:MAX_FALLBACKS])


def _refuse(decision: Decision, context_tokens: int, skipped: list[str]) -> NoReturn:
    too_small = [c for c in decision.candidates if c.pool.context_tokens < context_tokens]
    if too_small and len(too_small) == len(decision.candidates):
        listed = ", ".join(f"'{c.pool.name}' ({c.pool.context_tokens})" for c in too_small)
        raise InvalidRequest(
            f"the request needs about {context_tokens} tokens of context (messages plus max_tokens); "
            f"decision '{decision.name}' has no pool that large: {listed}",
        )
    names = ", ".join(f"'{c.pool.name}'" for c in decision.candidates)
    raise Unavailable(f"no ready replica in pool(s) {names} of decision '{decision.name}'; " + "; ".join(skipped))
