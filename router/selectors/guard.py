"""Do no harm: a learned selector that does not know says so and ranks as a prompt-blind mix would.

A cost-quality or knn estimate is trusted for a request only when
- the request is near its labelled data: the cosine to the nearest labelled prompt is at least
  `min_similarity` (far from everything it was fitted on, an estimate is an extrapolation), and
- it is confident: the best candidate's lead (quality - lambda x cost) over the second is at least
  `min_margin` quality points (a lead inside the estimate's noise is a coin).
Otherwise the selector falls back to the decision's declared order with the first place drawn at the
static shares: each candidate's share of the picks the selector makes on its own labelled data at the lambda
in force (the prompt-blind mix that costs what the selector costs), drawn by a hash of the request id (the
same request always lands alike, as with `weighted`). The evidence says so (`fallback` and a note).

Out of distribution, the fallback is random mixing at the selector's own shares: it cannot route worse than a
coin there, and it gives up only what an untrustworthy estimate would have gained. The thresholds are tuned
offline inside training groups (`switchpoint bench routing`); a live selector's default `min_similarity` is a
low quantile of its labelled prompts' own nearest-neighbour similarities (`default_guard`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from switchpoint.router.selectors.base import SelectorError
from switchpoint.router.selectors.simple import unit_hash

FALLBACK_SALT = "switchpoint-fallback"
DEFAULT_QUANTILE = 0.01  # a request less similar to the data than 99 % of its own prompts are to each other ...
DEFAULT_SLACK = 0.1  # ... by this much cosine


@dataclass(frozen=True)
class GuardParams:
    min_similarity: float = -1.0  # cosine to the nearest labelled prompt below which the selector falls back
    min_margin: float = 0.0  # the best candidate's lead (quality points) below which it falls back

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_similarity) and -1.0 <= self.min_similarity <= 1.01):
            raise SelectorError(f"min_similarity must be a cosine in [-1, 1], got {self.min_similarity!r}")
        if not (math.isfinite(self.min_margin) and self.min_margin >= 0):
            raise SelectorError(f"min_margin must be a finite number >= 0, got {self.min_margin!r}")

    @property
    def active(self) -> bool:
        return self.min_similarity > -1.0 or self.min_margin > 0.0


OFF = GuardParams()


def margins(score: np.ndarray) -> np.ndarray:
    """(n,) the best score's lead over the second best per row (inf with one candidate)."""
    if score.shape[1] < 2:
        return np.full(score.shape[0], np.inf)
    top2 = -np.partition(-score, 1, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def unsure(guard: GuardParams, similarity: np.ndarray | None, score: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) bool: the rows on which the selector does not trust its estimate. score: (n, m) quality - lambda x
    cost, read only by the margin rule (None when min_margin is 0)."""
    if guard.min_similarity > -1.0 and similarity is not None:
        out = np.asarray(similarity) < guard.min_similarity
    else:
        out = np.zeros(n, dtype=bool)
    if guard.min_margin > 0.0:
        if score is None:
            raise SelectorError("the margin rule needs the scores")
        out = out | (margins(score) < guard.min_margin)
    return out


def pick_shares(picks: np.ndarray, m: int) -> np.ndarray:
    """(m,) each candidate's share of the picks."""
    counts = np.bincount(np.asarray(picks, dtype=np.int64), minlength=m).astype(np.float64)
    return counts / counts.sum() if counts.sum() > 0 else np.full(m, 1.0 / m)


def hash_uniforms(request_ids: Sequence[str], salt: str = FALLBACK_SALT) -> np.ndarray:
    """(n,) a uniform number in (0, 1) per request from a hash of its id (no id: at random)."""
    return np.array([unit_hash(salt, rid) if rid else (int.from_bytes(os.urandom(8), "big") + 0.5) / 2.0**64
                     for rid in request_ids])


def draw(u: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """(n,) the candidate each uniform u falls on when candidate i takes the share shares[i] of (0, 1)."""
    p = np.asarray(shares, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise SelectorError(f"fallback shares must be finite, >= 0 and not all 0; got {p!r}")
    return np.minimum(np.searchsorted(np.cumsum(p / p.sum()), u, side="right"), len(p) - 1)


def blind_draw(request_ids: Sequence[str], shares: np.ndarray, salt: str = FALLBACK_SALT) -> np.ndarray:
    """(n,) a candidate per request, drawn with probabilities `shares` by a hash of its id."""
    return draw(hash_uniforms(request_ids, salt), shares)


def fallback_order(first: int, m: int) -> list[int]:
    """The declared order with `first` moved to the front."""
    return [first] + [i for i in range(m) if i != first]


def default_guard(similarity_to_own: np.ndarray, quantile: float = DEFAULT_QUANTILE,
                  slack: float = DEFAULT_SLACK) -> GuardParams:
    """min_similarity `slack` below a low quantile of the labelled prompts' similarity to their nearest other."""
    if len(similarity_to_own) == 0:
        return OFF
    return GuardParams(min_similarity=max(-1.0, float(np.quantile(similarity_to_own, quantile)) - slack))
