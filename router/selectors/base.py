"""The common shape of the selection algorithms: candidates and a request in, an order and evidence out.

Every selector is a pure decision function of (candidates, request[, its own state]): it never looks at
replicas. The pipeline walks the returned order and takes the first candidate with a ready replica, so a
selector only has to rank. The evidence is what the trace shows (predicted quality and cost per candidate,
the neighbours used, lambda, whether the choice was an exploration).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class SelectorError(ValueError):
    """A selector's configuration or input is unusable; the message names the field and the cause."""


class DatasetError(SelectorError):
    """A routing dataset cannot be used; the message names the file and, where it applies, the line."""


@dataclass(frozen=True)
class CandidateModel:
    """One candidate of a decision as the selectors see it.

    key: unique within the decision (the pool name, say); model: the model name the dataset and the
    bandit state know it by (the candidate's upstream model unless mapped); prices in USD per 1M tokens.
    """

    key: str
    model: str
    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        """USD for one request of that size (the same formula as config.model.Pricing.cost)."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


@dataclass(frozen=True)
class SelectionRequest:
    """What a selector knows about one request.

    embedding: the prompt's embedding from the router's encoder (L2-normalised, (dim,)); None when the
    policy has no encoder or it failed (kNN and the learned heads then fall back to the dataset means and
    say so in the evidence). request_id: seeds the weighted choice (same id, same order).
    """

    input_tokens: int
    output_tokens: int
    embedding: np.ndarray | None = None
    request_id: str = ""


@dataclass(frozen=True)
class CandidateScore:
    key: str
    model: str
    quality: float | None  # predicted quality in [0, 1]; None when the algorithm does not predict it
    cost: float  # predicted USD for this request
    score: float | None  # what the order sorts by (quality - lambda * cost, a sampled reward, a weight key)
    known: bool = True  # False: the dataset / state has no data on this model; quality is the prior


@dataclass(frozen=True)
class Neighbour:
    id: str
    similarity: float


@dataclass(frozen=True)
class Evidence:
    algorithm: str
    candidates: tuple[CandidateScore, ...]
    lam: float | None = None
    neighbours: tuple[Neighbour, ...] = ()
    explored: bool = False  # the bandit's pick differs from the greedy (posterior-mean) pick
    context: str | None = None  # the bandit's context bucket, to hand back with the feedback
    notes: tuple[str, ...] = ()
    fallback: bool = False  # the selector did not trust its estimate: declared order at the static shares

    def attributes(self, prefix: str = "switchpoint.selection.") -> dict[str, str | float | bool]:
        """Flat span attributes for the trace (OpenTelemetry attribute values are scalars)."""
        out: dict[str, str | float | bool] = {prefix + "algorithm": self.algorithm, prefix + "explored": self.explored}
        if self.fallback:
            out[prefix + "fallback"] = True
        if self.lam is not None:
            out[prefix + "lambda"] = self.lam
        if self.context is not None:
            out[prefix + "context"] = self.context
        for c in self.candidates:
            if c.quality is not None:
                out[f"{prefix}quality.{c.key}"] = round(c.quality, 6)
            out[f"{prefix}cost.{c.key}"] = c.cost
            if not c.known:
                out[f"{prefix}unknown.{c.key}"] = True
        if self.neighbours:
            out[prefix + "neighbours"] = ",".join(f"{n.id}:{n.similarity:.3f}" for n in self.neighbours)
        if self.notes:
            out[prefix + "notes"] = "; ".join(self.notes)
        return out


@dataclass(frozen=True)
class Ranking:
    """order: indices into the candidates given, best first (every candidate appears once)."""

    order: tuple[int, ...]
    evidence: Evidence
    keys: tuple[str, ...] = field(default=())

    @property
    def first(self) -> int:
        return self.order[0]


class Selector(Protocol):
    algorithm: str

    def rank(self, candidates: Sequence[CandidateModel], request: SelectionRequest) -> Ranking: ...


def check_candidates(candidates: Sequence[CandidateModel]) -> None:
    if not candidates:
        raise SelectorError("no candidates to rank")
    keys = [c.key for c in candidates]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise SelectorError(f"candidate keys must be unique; repeated: {', '.join(dup)}")
    for c in candidates:
        for name, price in (("input", c.input_per_million), ("output", c.output_per_million)):
            if not (math.isfinite(price) and price >= 0):
                raise SelectorError(f"candidate '{c.key}': {name} price {price} must be a finite number >= 0")


def check_lambda(lam: float, where: str = "lambda") -> float:
    """lambda is quality points per USD per request: any finite value >= 0 (0 = quality only)."""
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam) or lam < 0:
        raise SelectorError(f"{where} must be a finite number >= 0 (quality points per USD per request); got {lam!r}")
    return float(lam)


def candidate_prices(candidates: Sequence[CandidateModel]) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) USD per 1M tokens, (m,) each: what candidate_costs multiplies (a selector keeps them per
    candidate set instead of rebuilding them per request)."""
    return (np.array([c.input_per_million for c in candidates], dtype=np.float64),
            np.array([c.output_per_million for c in candidates], dtype=np.float64))


def costs_at(prices: tuple[np.ndarray, np.ndarray], input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """(n, m) predicted USD at candidate_prices: input_tokens (n,), output_tokens (n, m) or (n,)."""
    pin, pout = prices
    out = np.asarray(output_tokens, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    return (np.asarray(input_tokens, dtype=np.float64)[:, None] * pin + out * pout) / 1e6


def candidate_costs(candidates: Sequence[CandidateModel], input_tokens: np.ndarray,
                    output_tokens: np.ndarray) -> np.ndarray:
    """(n, m) predicted USD: input_tokens (n,), output_tokens (n, m) or (n,)."""
    return costs_at(candidate_prices(candidates), input_tokens, output_tokens)


COST_BASES = ("absolute", "relative")


def decision_costs(cost: np.ndarray, basis: str) -> np.ndarray:
    """The cost the decision weighs: USD ("absolute"), or each candidate's share of the request's most expensive
    candidate ("relative": lambda is then quality points per full price, whatever the prompt's length)."""
    if basis == "absolute":
        return cost
    if basis != "relative":
        raise SelectorError(f"cost basis must be one of {', '.join(COST_BASES)}, not {basis!r}")
    top = cost.max(axis=1, keepdims=True)
    return np.divide(cost, top, out=np.zeros_like(cost), where=top > 0)


def order_of(score: Sequence[float], cost: Sequence[float]) -> list[int]:
    """Candidate indices, best first, by score (quality - lam * cost); ties go to the cheaper, then the declared
    order. One request's row as plain floats: for the 2-9 candidates of a decision a Python sort costs less than
    numpy's per-call overhead. The scores are finite (qualities in [0, 1], costs and lambda finite)."""
    return sorted(range(len(score)), key=lambda j: (-score[j], cost[j], j))


def first_choice(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """(n,) the index order_of puts first in each row of quality - lam * cost, vectorised for the benchmark
    harness's n = every test prompt (the same tie rule: the cheaper, then the declared order)."""
    score = quality - lam * cost
    best = score.max(axis=1, keepdims=True)
    tied = score == best  # among the rows' maxima, the cheapest, then the earliest
    masked = np.where(tied, cost, np.inf)
    cheapest = masked.min(axis=1, keepdims=True)
    return np.argmax(tied & (masked <= cheapest), axis=1)


def ranking(algorithm: str, candidates: Sequence[CandidateModel], order: Sequence[int],
            scores: Mapping[int, CandidateScore], *, lam: float | None = None,
            neighbours: tuple[Neighbour, ...] = (), explored: bool = False, context: str | None = None,
            notes: tuple[str, ...] = (), fallback: bool = False) -> Ranking:
    """A Ranking whose evidence lists the candidates' scores in the order given."""
    order_t = tuple(int(i) for i in order)
    ev = Evidence(algorithm, tuple(scores[i] for i in order_t), lam, neighbours, explored, context, notes, fallback)
    return Ranking(order_t, ev, tuple(candidates[i].key for i in order_t))
