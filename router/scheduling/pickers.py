"""Pickers: the order in which the scored candidates are offered (the first is chosen, the next are fallbacks).

A picker gets the candidates' weighted scores (None for a profile without scorers), how
many it must rank (`k`: the chosen one and its alternatives; fewer when there are fewer
candidates) and the scheduler's randomness and round-robin turn, and returns `k` distinct
candidate indices. Ranking only the first `k` keeps a Route's cost from growing with the fleet.

Adding a picker: a function here, registered with `@PICKERS.register("name")`, and a profile that uses it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from switchpoint.router.scheduling.registry import Registry

NARROW_ABOVE = 8  # max-score sorts all candidates up to this many times k; above, it narrows first

@dataclass
class PickContext:
    rng: random.Random
    np_rng: np.random.Generator
    turn: Callable[[], int]  # the pool's next round-robin turn (advances when called)


Picker = Callable[[np.ndarray | None, int, int, PickContext], np.ndarray]
PICKERS: Registry[Picker] = Registry("picker")




@PICKERS.register("max-score")
def max_score(scores: np.ndarray | None, n: int, k: int, ctx: PickContext) -> np.ndarray:
    """Highest score first; ties broken at random, as GIE's. Without scores (every weight 0) all tie.

    Up to NARROW_ABOVE x k candidates, every candidate draws its tie-break from `rng` in order (what
    the scheduler always did, so seeded runs repeat); in a larger pool only the k best are ordered
    (those tied with the k-th drawn at random among themselves), with numpy's generator."""
    if scores is None:
        scores = np.zeros(n)
    if n > NARROW_ABOVE * k:
        kth = np.partition(scores, n - k)[n - k]  # the k-th best score
        above = np.flatnonzero(scores > kth)  # fewer than k: all of them are ranked
        tied = np.flatnonzero(scores == kth)  # a random few of these fill the rest, in random order
        rest = ctx.np_rng.choice(tied, k - len(above), replace=False)
        if not len(above):
            return rest
        return np.concatenate((above[np.lexsort((ctx.np_rng.random(len(above)), -scores[above]))], rest))
    draw = ctx.rng.random
    values = scores.tolist()  # a Python sort of (score, draw) pairs: a third of np.lexsort's cost on a few values
    ranked = sorted([(-values[i], draw(), i) for i in range(n)])
    return np.array([i for _, _, i in ranked[:k]], dtype=np.intp)


@PICKERS.register("round-robin")
def round_robin(scores: np.ndarray | None, n: int, k: int, ctx: PickContext) -> np.ndarray:
    """The pool's replicas in turn."""
    return (ctx.turn() % n + np.arange(k)) % n


@PICKERS.register("random")
def uniform(scores: np.ndarray | None, n: int, k: int, ctx: PickContext) -> np.ndarray:
    """Uniformly at random."""
    return np.array(ctx.rng.sample(range(n), k), dtype=np.intp)
