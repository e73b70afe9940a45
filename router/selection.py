"""Choosing the pool among a decision's candidates, and the fallbacks behind it."""

from __future__ import annotations

from dataclasses import dataclass

from switchpoint.config.model import Candidate, Decision, Replica
from switchpoint.router.refusals import InvalidRequest, Unavailable
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.scheduler import Placement, Scheduler

MAX_FALLBACKS = 4


@dataclass(frozen=True)
class Fallback:
    candidate: Candidate
    replica: Replica


@dataclass(frozen=True)
class Selection:
    candidate: Candidate
    placement: Placement
    fallbacks: tuple[Fallback, ...]
    skipped: tuple[str, ...]  # why earlier candidates were passed over


def select_static(decision: Decision, req: RouteInput, scheduler: Scheduler) -> Selection:
    """The first candidate that fits the request's context and has a ready replica."""
    context_tokens = req.context_tokens
    chosen: tuple[Candidate, Placement] | None = None
    others: list[Fallback] = []
    skipped: list[str] = []
    too_small: list[str] = []
    for cand in decision.candidates:
        pool = cand.pool
        if pool.context_tokens < context_tokens:
            too_small.append(f"'{pool.name}' ({pool.context_tokens})")
            skipped.append(f"pool '{pool.name}': context {pool.context_tokens} < {context_tokens} tokens needed")
            continue
        if chosen is not None:
            # a fallback only needs a ready replica: no scoring for pools the request will probably not use
            if len(others) < MAX_FALLBACKS and (replica := scheduler.fallback(cand)) is not None:
                others.append(Fallback(cand, replica))
            continue
        placement = scheduler.place(cand, req)
        if placement is None:
            skipped.append(f"pool '{pool.name}': no ready replica")
            continue
        chosen = (cand, placement)
    if chosen is None:
        if too_small and len(too_small) == len(decision.candidates):
            raise InvalidRequest(
                f"the request needs about {context_tokens} tokens of context (messages plus max_tokens); "
                f"decision '{decision.name}' has no pool that large: {', '.join(too_small)}",
            )
        names = ", ".join(f"'{c.pool.name}'" for c in decision.candidates)
        raise Unavailable(f"no ready replica in pool(s) {names} of decision '{decision.name}'; " + "; ".join(skipped))
    cand, placement = chosen
    fallbacks = [Fallback(cand, r) for r in placement.alternatives] + others
    return Selection(cand, placement, tuple(fallbacks[:MAX_FALLBACKS]), tuple(skipped))
