"""What a request costs against a budget, in the budget's integer unit (pure).

Token budgets count tokens (input, output or both). Money budgets count nano-units of
the pools' currency (1e-9 USD), so that the ledger adds integers exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from switchpoint.config.model import Budget, Pricing

NANO_PER_UNIT = 1_000_000_000


def is_money(budget: Budget) -> bool:
    return budget.limit_amount is not None


def limit_units(budget: Budget) -> int:
    if budget.limit_amount is not None:
        return round(budget.limit_amount * NANO_PER_UNIT)
    assert budget.limit_tokens is not None
    return budget.limit_tokens


def amount(budget: Budget, input_tokens: int, output_tokens: int, pricing: Pricing) -> int:
    if is_money(budget):
        # price per million tokens x tokens / 1e6 x 1e9 nano-units
        return math.ceil((input_tokens * pricing.input_per_million + output_tokens * pricing.output_per_million) * 1000)
    if budget.token_type == "input":
        return input_tokens
    if budget.token_type == "output":
        return output_tokens
    return input_tokens + output_tokens


def display(budget: Budget, units: float) -> float:
    """Units in the budget's own terms: tokens, or money in the currency."""
    return units / NANO_PER_UNIT if is_money(budget) else units


def unit_name(budget: Budget) -> str:
    return "USD" if is_money(budget) else f"{budget.token_type} tokens"


@dataclass
class OutputEstimator:
    """Expected completion tokens when a request gives no max_tokens, learned from Reports.

    Per decision, an exponentially weighted mean and mean deviation of reported completion
    tokens; the estimate is mean + 2 x deviation (an upper estimate, as TCP's RTO), and
    DEFAULT until MIN_SAMPLES reports have arrived. In-process: each router learns alone.
    """

    DEFAULT = 512
    MIN_SAMPLES = 20
    ALPHA = 0.05

    def __post_init__(self) -> None:
        self._stats: dict[str, tuple[float, float, int]] = {}

    def expected(self, decision: str, max_tokens: int | None) -> int:
        if max_tokens:
            return max_tokens
        mean, dev, count = self._stats.get(decision, (0.0, 0.0, 0))
        return self.DEFAULT if count < self.MIN_SAMPLES else math.ceil(mean + 2 * dev)

    def observe(self, decision: str, completion_tokens: int) -> None:
        mean, dev, count = self._stats.get(decision, (float(completion_tokens), 0.0, 0))
        dev += self.ALPHA * (abs(completion_tokens - mean) - dev)
        mean += self.ALPHA * (completion_tokens - mean)
        self._stats[decision] = (mean, dev, count + 1)
