"""One entry point from a decision's selection settings (the CRD's spec.decisions[].selection) to a selector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from switchpoint.router.selectors.base import Selector
from switchpoint.router.selectors.index import TextEncoder
from switchpoint.router.selectors.registry import SelectorSettings, selection_algorithm


def make_selector(algorithm: str, *, weights: Sequence[float] = (), lam: float | None = None,
                  target_quality_share: float | None = None, dataset: str | Path | None = None, k: int = 10,
                  encoder: TextEncoder | None = None, exploration: float = 1.0, cost_basis: str = "absolute",
                  unknown_model: str = "error", bandit_state: object | None = None,
                  cache_dir: Path | None = None) -> Selector:
    """Build the selector a decision names (through the registry). Loads the dataset and embeds it (cached on
    disk) for knn and cost-quality, so call it when a policy is compiled or reloaded, not per request; errors
    (SelectorError, DatasetError) name the field and the cause.

    encoder: the router's encoder for the policy (knn needs it; cost-quality uses it for its quality heads,
    and without one falls back to the dataset's per-model means). bandit_state: a RedisBanditState shared by
    the replicas, or None for an in-process one.
    """
    settings = SelectorSettings(weights=weights, lam=lam, target_quality_share=target_quality_share,
                                dataset=dataset, k=k, encoder=encoder, exploration=exploration, cost_basis=cost_basis,
                                unknown_model=unknown_model, bandit_state=bandit_state, cache_dir=cache_dir)
    return selection_algorithm(algorithm).build(settings)
