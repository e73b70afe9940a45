"""One entry point from a decision's selection settings (the CRD's spec.decisions[].selection) to a selector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from switchpoint.router.selectors.bandit import BanditParams, BanditSelector, BanditState
from switchpoint.router.selectors.base import Selector, SelectorError
from switchpoint.router.selectors.costquality import (
    CostQualityParams,
    KnnParams,
    cost_quality_selector,
    knn_selector,
)
from switchpoint.router.selectors.index import TextEncoder
from switchpoint.router.selectors.simple import StaticSelector, WeightedParams, WeightedSelector

ALGORITHMS = ("static", "weighted", "cost-quality", "knn", "bandit")


def make_selector(algorithm: str, *, weights: Sequence[float] = (), lam: float | None = None,
                  target_quality_share: float | None = None, dataset: str | Path | None = None, k: int = 10,
                  encoder: TextEncoder | None = None, exploration: float = 1.0, cost_basis: str = "absolute",
                  unknown_model: str = "error", bandit_state: BanditState | None = None,
                  cache_dir: Path | None = None) -> Selector:
    """Build the selector a decision names. Loads the dataset and embeds it (cached on disk) for knn and
    cost-quality, so call it when a policy is compiled or reloaded, not per request; errors (SelectorError,
    DatasetError) name the field and the cause.

    encoder: the router's encoder for the policy (knn needs it; cost-quality uses it for its quality heads,
    and without one falls back to the dataset's per-model means). bandit_state: a RedisBanditState shared by
    the replicas, or None for an in-process one.
    """
    if algorithm == "static":
        return StaticSelector()
    if algorithm == "weighted":
        return WeightedSelector(WeightedParams(tuple(float(w) for w in weights)))
    if algorithm == "knn":
        if dataset is None:
            raise SelectorError("knn needs a dataset (labelled prompts) to build its index from")
        if encoder is None:
            raise SelectorError("knn needs the router's encoder to embed its dataset and the requests")
        params = KnnParams(dataset=str(dataset), k=k, lam=lam, target_quality_share=target_quality_share,
                           cost_basis=cost_basis, unknown_model=unknown_model)  # type: ignore[arg-type]
        return knn_selector(params, encoder, cache_dir)
    if algorithm == "cost-quality":
        cq = CostQualityParams(lam=lam, target_quality_share=target_quality_share,
                               dataset=None if dataset is None else str(dataset),
                               estimator="linear" if encoder is not None else "mean", cost_basis=cost_basis,
                               unknown_model=unknown_model)  # type: ignore[arg-type]
        return cost_quality_selector(cq, encoder, cache_dir)
    if algorithm == "bandit":
        if target_quality_share is not None:
            raise SelectorError("bandit takes lambda, not a target quality share (it has no dataset to translate it)")
        return BanditSelector(BanditParams(lam=0.0 if lam is None else lam, exploration=exploration,
                                           cost_basis=cost_basis), bandit_state)
    raise SelectorError(f"unknown selection algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
