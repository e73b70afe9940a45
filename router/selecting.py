"""Model selection in the router: a decision's `selection` settings turned into a selector, and its ranking used.

Selectors (router/selectors/) rank a decision's candidates; the pipeline then takes the first that fits
the request and has a ready replica, exactly as `static` does with the declared order. They are built
when a config loads — a dataset indexed (its embeddings cached on disk), a target quality share
translated into lambda, a dry-run ranking that surfaces a model the dataset does not know — so a broken
selection refuses the config instead of failing requests. Selectors are kept across reloads while their
settings and candidates are unchanged, so a bandit keeps what it learned.

Bandit feedback: at Report, quality is the Report's `quality` when the frontend sends one (a user
rating, an evaluator's score in [0, 1]), else 1 for a success and 0 for an error or a truncated
answer; cancelled requests teach nothing. With --redis, the bandit's counts are shared by every router
replica (synced every second), otherwise they stay in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchpoint.config.errors import ConfigError, Problem
from switchpoint.config.model import Decision, Policy, RouterConfig, SelectionConfig
from switchpoint.router.classifiers.bank import ModelBank
from switchpoint.router.classifiers.encoder import EncoderError
from switchpoint.router.selectors import (
    BanditSelector,
    CandidateModel,
    Ranking,
    RedisBanditState,
    SelectionRequest,
    Selector,
    SelectorError,
)
from switchpoint.router.selectors.factory import make_selector

EMBEDDING_ALGORITHMS = ("knn", "cost-quality", "bandit")


@dataclass(frozen=True)
class BanditFeedback:
    """Kept in the in-flight entry of a request a bandit placed, for its Report."""

    selector: BanditSelector
    context: str
    model: str


def candidate_models(decision: Decision) -> tuple[CandidateModel, ...]:
    return tuple(CandidateModel(c.pool.name, c.model, c.pool.pricing.input_per_million,
                                c.pool.pricing.output_per_million) for c in decision.candidates)


class SelectorBank:
    def __init__(self, bank: ModelBank, redis_url: str | None = None, cache_dir: Path | None = None):
        self.bank = bank
        self.redis_url = redis_url
        self.cache_dir = cache_dir
        self._selectors: dict[tuple[str, str], tuple[tuple, Selector]] = {}  # (policy, decision) -> (key, selector)
        self._bandit_states: list[RedisBanditState] = []

    def selector(self, policy: Policy, decision: Decision) -> Selector | None:
        found = self._selectors.get((policy.key, decision.name))
        return None if found is None else found[1]

    def prepare(self, config: RouterConfig) -> None:
        """Build (or keep) the selector of every non-static decision; ConfigError naming the field otherwise."""
        problems: list[Problem] = []
        for policy in config.policies.values():
            for decision in (*policy.decisions, policy.default):
                if decision.selection.algorithm == "static":
                    continue
                # policy.decisions is sorted by priority, not in spec order: name the decision, not an index
                field = ("spec.default.selection" if decision is policy.default
                         else f"spec.decisions[name={decision.name}].selection")
                key = (decision.selection, candidate_models(decision))
                current = self._selectors.get((policy.key, decision.name))
                if current is not None and current[0] == key:
                    continue
                try:
                    selector = self._build(policy, decision)
                    selector.rank(candidate_models(decision), SelectionRequest(100, 100, self._probe(decision)))
                except (SelectorError, EncoderError, OSError) as exc:
                    problems.append(Problem("", f"RoutingPolicy {policy.key}", field,
                                            f"{decision.selection.algorithm} selection: {exc}"))
                    continue
                self._selectors[(policy.key, decision.name)] = (key, selector)
        if problems:
            raise ConfigError(problems)

    def _build(self, policy: Policy, decision: Decision) -> Selector:
        s: SelectionConfig = decision.selection
        state = None
        if s.algorithm == "bandit" and self.redis_url:
            state = RedisBanditState(self.redis_url, f"{policy.key}/{decision.name}")
            self._bandit_states.append(state)
        encoder = self.bank.encoder(s.encoder) if s.algorithm in EMBEDDING_ALGORITHMS else None
        return make_selector(s.algorithm, weights=s.weights, lam=s.lam, target_quality_share=s.target_quality_share,
                             dataset=s.dataset, k=s.k, encoder=encoder, exploration=s.exploration,
                             bandit_state=state, cache_dir=self.cache_dir)

    def _probe(self, decision: Decision) -> np.ndarray | None:
        if decision.selection.algorithm not in EMBEDDING_ALGORITHMS:
            return None
        return self.bank.encoder(decision.selection.encoder).encode_one("probe")

    async def close(self) -> None:
        for state in self._bandit_states:
            with contextlib.suppress(Exception):
                await state.close()

    async def sync_forever(self, interval_s: float = 1.0) -> None:
        """Share bandit counts through Redis (a background task of the router)."""
        while True:
            for state in list(self._bandit_states):
                with contextlib.suppress(Exception):  # RedisBanditState logs its own outages
                    await state.sync()
            await asyncio.sleep(interval_s)


def feedback(ranking: Ranking | None, selector: Selector | None, decision_model: str) -> BanditFeedback | None:
    """What a bandit needs at Report for the request it placed (None for other algorithms)."""
    if not isinstance(selector, BanditSelector) or ranking is None or ranking.evidence.context is None:
        return None
    return BanditFeedback(selector, ranking.evidence.context, decision_model)
