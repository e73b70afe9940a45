"""The registry of selection algorithms: a decision's `selection.algorithm` names one.

Each algorithm registers itself in its own module (simple.py: static, weighted; costquality.py: knn,
cost-quality; bandit.py: bandit) with a builder from `SelectorSettings`, and says whether it ranks with
the request's embedding. The router, the CRD test and `switchpoint bench routing` read this registry:
adding an algorithm touches its module, its registration and the CRD's enum (a test ties the two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchpoint.router.selectors.base import Selector, SelectorError
from switchpoint.router.selectors.index import TextEncoder


@dataclass(frozen=True)
class SelectorSettings:
    """A decision's selection settings (the CRD's spec.decisions[].selection) plus what the router supplies."""

    weights: Sequence[float] = ()
    lam: float | None = None
    target_quality_share: float | None = None
    dataset: str | Path | None = None
    k: int = 10
    encoder: TextEncoder | None = None  # the decision's encoder, for algorithms that embed
    exploration: float = 1.0
    cost_basis: str = "absolute"
    unknown_model: str = "error"
    bandit_state: object | None = None  # a shared BanditState (RedisBanditState) or None for an in-process one
    cache_dir: Path | None = None


@dataclass(frozen=True)
class SelectionAlgorithm:
    name: str
    build: Callable[[SelectorSettings], Selector]
    needs_embedding: bool  # ranks with the request's embedding (the router computes it off the event loop)
    learns: bool = False  # learns from Report feedback (its state may be shared through Redis)


_REGISTRY: dict[str, SelectionAlgorithm] = {}


def register(algorithm: SelectionAlgorithm) -> SelectionAlgorithm:
    if algorithm.name in _REGISTRY:
        raise ValueError(f"selection algorithm {algorithm.name!r} is registered twice")
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def selection_algorithm(name: str) -> SelectionAlgorithm:
    found = _REGISTRY.get(name)
    if found is None:
        raise SelectorError(f"unknown selection algorithm {name!r} (one of {', '.join(algorithm_names())})")
    return found


def algorithm_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
