"""Selection algorithms: which of a decision's candidates to try first (static, weighted, cost-quality, knn, bandit).

Pure decision functions of the common shape `rank(candidates, request) -> Ranking` (base.py); the pipeline walks
`Ranking.order` and takes the first candidate with a ready replica. `switchpoint bench routing` measures them
offline through the same code.
"""

from __future__ import annotations

from switchpoint.router.selectors.bandit import BanditParams, BanditSelector, BanditState, RedisBanditState
from switchpoint.router.selectors.base import (
    CandidateModel,
    CandidateScore,
    DatasetError,
    Evidence,
    Neighbour,
    Ranking,
    SelectionRequest,
    Selector,
    SelectorError,
)
from switchpoint.router.selectors.costquality import (
    CostQualityParams,
    CostQualitySelector,
    KnnParams,
    cost_quality_selector,
    knn_selector,
)
from switchpoint.router.selectors.dataset import RoutingDataset, load_dataset
from switchpoint.router.selectors.factory import make_selector
from switchpoint.router.selectors.registry import algorithm_names, selection_algorithm
from switchpoint.router.selectors.simple import StaticSelector, WeightedParams, WeightedSelector

__all__ = [
    "BanditParams",
    "BanditSelector",
    "BanditState",
    "CandidateModel",
    "CandidateScore",
    "CostQualityParams",
    "CostQualitySelector",
    "DatasetError",
    "Evidence",
    "KnnParams",
    "Neighbour",
    "Ranking",
    "RedisBanditState",
    "RoutingDataset",
    "SelectionRequest",
    "Selector",
    "SelectorError",
    "StaticSelector",
    "WeightedParams",
    "WeightedSelector",
    "algorithm_names",
    "cost_quality_selector",
    "knn_selector",
    "load_dataset",
    "make_selector",
    "selection_algorithm",
]
