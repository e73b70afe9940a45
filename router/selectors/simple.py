"""static (the declared order) and weighted (a weighted draw without replacement, fixed by the request id)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from switchpoint.router.selectors.base import (
    CandidateModel,
    CandidateScore,
    Ranking,
    SelectionRequest,
    SelectorError,
    check_candidates,
    ranking,
)
from switchpoint.router.selectors.registry import SelectionAlgorithm, register


def _costs(candidates: Sequence[CandidateModel], request: SelectionRequest) -> list[float]:
    return [c.cost(request.input_tokens, request.output_tokens) for c in candidates]


class StaticSelector:
    """The declared order: the pipeline takes the first candidate with a ready replica."""

    algorithm = "static"

    def rank(self, candidates: Sequence[CandidateModel], request: SelectionRequest) -> Ranking:
        check_candidates(candidates)
        costs = _costs(candidates, request)
        scores = {i: CandidateScore(c.key, c.model, None, costs[i], None) for i, c in enumerate(candidates)}
        return ranking(self.algorithm, candidates, range(len(candidates)), scores)


@dataclass(frozen=True)
class WeightedParams:
    weights: tuple[float, ...]
    salt: str = ""  # a different salt gives an independent draw for the same request ids

    def __post_init__(self) -> None:
        if not self.weights:
            raise SelectorError("weighted selection needs one weight per candidate")
        for i, w in enumerate(self.weights):
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise SelectorError(f"weights[{i}] must be a finite number >= 0, got {w!r}")
        if not any(self.weights):
            raise SelectorError("at least one weight must be above 0")


def unit_hash(*parts: str) -> float:
    """A uniform number in (0, 1) from the parts' SHA-256 (the same on every replica and every run)."""
    h = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return (int.from_bytes(h[:8], "big") + 0.5) / 2.0**64


class WeightedSelector:
    """Weighted random order, deterministic per request id.

    Each candidate i gets u_i = unit_hash(salt, request_id, key_i) and the key log(u_i) / w_i; sorting by the key,
    largest first, is a weighted draw without replacement (Efraimidis-Spirakis): candidate i comes first with
    probability w_i / sum(w), the order of the others follows the same rule, and the same request id always gets
    the same order (a retried request lands on the same pool). Weight 0: never drawn, kept last as a fallback in
    declared order. A request without an id draws from os.urandom and says so in the evidence.
    """

    algorithm = "weighted"

    def __init__(self, params: WeightedParams):
        self.params = params

    def keys(self, candidates: Sequence[CandidateModel], request_id: str) -> np.ndarray:
        keys = np.empty(len(candidates))
        for i, (c, w) in enumerate(zip(candidates, self.params.weights, strict=True)):
            u = unit_hash(self.params.salt, request_id, c.key) if request_id else \
                (int.from_bytes(os.urandom(8), "big") + 0.5) / 2.0**64
            keys[i] = math.log(u) / w if w > 0 else -math.inf
        return keys

    def rank(self, candidates: Sequence[CandidateModel], request: SelectionRequest) -> Ranking:
        check_candidates(candidates)
        if len(candidates) != len(self.params.weights):
            raise SelectorError(f"weighted selection has {len(self.params.weights)} weight(s) for "
                                f"{len(candidates)} candidate(s)")
        keys = self.keys(candidates, request.request_id)
        order = sorted(range(len(candidates)), key=lambda i: (-keys[i], i))
        costs = _costs(candidates, request)
        scores = {i: CandidateScore(c.key, c.model, None, costs[i], float(self.params.weights[i]))
                  for i, c in enumerate(candidates)}
        notes = () if request.request_id else ("no request id: a random draw",)
        return ranking(self.algorithm, candidates, order, scores, notes=notes)


register(SelectionAlgorithm("static", lambda s: StaticSelector(), needs_embedding=False))
register(SelectionAlgorithm("weighted", lambda s: WeightedSelector(WeightedParams(tuple(float(w) for w in s.weights))),
                            needs_embedding=False))
