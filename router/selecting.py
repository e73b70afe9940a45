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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from switchpoint.config.errors import ConfigError, Problem
from switchpoint.config.model import Decision, Policy, RouterConfig, SelectionConfig
from switchpoint.router.classifiers.bank import Models
from switchpoint.router.classifiers.encoder import EncoderError
from switchpoint.router.frozen import frozen
from switchpoint.router.selectors import (
    BanditSelector,
    CandidateModel,
    Ranking,
    RedisBanditState,
    SelectionRequest,
    Selector,
    SelectorError,
    selection_algorithm,
)
from switchpoint.router.selectors.factory import make_selector

SelectorKey = tuple[str, str]  # (policy key, decision name)


@frozen
class BanditFeedback:
    """Kept in the in-flight entry of a request a bandit placed, for its Report."""

    selector: BanditSelector
    context: str
    model: str


def candidate_models(decision: Decision) -> tuple[CandidateModel, ...]:
    return tuple(CandidateModel(c.pool.name, c.model, c.pool.pricing.input_per_million,
                                c.pool.pricing.output_per_million) for c in decision.candidates)


@dataclass(frozen=True)
class Selectors:
    """The selectors of one config: one per non-static decision, with the settings each was built from."""

    built: Mapping[SelectorKey, tuple[tuple, Selector]] = field(default_factory=dict)
    bandit_states: tuple[RedisBanditState, ...] = ()

    def selector(self, policy: Policy, decision: Decision) -> Selector | None:
        found = self.built.get((policy.key, decision.name))
        return None if found is None else found[1]


class SelectorBank:
    """Builds the Selectors of a config (in a worker thread, at load), reusing the previous snapshot's where a
    decision's settings and candidates are unchanged (so a bandit keeps what it learned)."""

    def __init__(self, redis_url: str | None = None, cache_dir: Path | None = None):
        self.redis_url = redis_url
        self.cache_dir = cache_dir

    def prepare(self, config: RouterConfig, models: Models, previous: Selectors | None = None) -> Selectors:
        """The selectors of every non-static decision; ConfigError naming the field otherwise. Builds a new
        Selectors and never changes `previous`: a refused config leaves the one in force as it was."""
        problems: list[Problem] = []
        built: dict[SelectorKey, tuple[tuple, Selector]] = {}
        old = previous.built if previous is not None else {}
        for policy in config.policies.values():
            for decision in (*policy.decisions, policy.default):
                if decision.selection.algorithm == "static":
                    continue
                # policy.decisions is sorted by priority, not in spec order: name the decision, not an index
                field_path = ("spec.default.selection" if decision is policy.default
                              else f"spec.decisions[name={decision.name}].selection")
                key = (decision.selection, candidate_models(decision))
                current = old.get((policy.key, decision.name))
                if current is not None and current[0] == key:
                    built[(policy.key, decision.name)] = current
                    continue
                try:
                    selector = self._build(policy, decision, models)
                    selector.rank(candidate_models(decision),
                                  SelectionRequest(100, 100, self._probe(decision, models)))
                except (SelectorError, EncoderError, OSError) as exc:
                    problems.append(Problem("", f"RoutingPolicy {policy.key}", field_path,
                                            f"{decision.selection.algorithm} selection: {exc}"))
                    continue
                built[(policy.key, decision.name)] = (key, selector)
        if problems:
            raise ConfigError(problems)  # states of selectors built here never connected: nothing to close
        states = tuple(sel.state for _, sel in built.values()
                       if isinstance(sel, BanditSelector) and isinstance(sel.state, RedisBanditState))
        return Selectors(MappingProxyType(built), states)

    def _build(self, policy: Policy, decision: Decision, models: Models) -> Selector:
        s: SelectionConfig = decision.selection
        algorithm = selection_algorithm(s.algorithm)
        state = None
        if algorithm.learns and self.redis_url:
            state = RedisBanditState(self.redis_url, f"{policy.key}/{decision.name}")
        encoder = models.encoder(s.encoder) if algorithm.needs_embedding else None
        return make_selector(s.algorithm, weights=s.weights, lam=s.lam, target_quality_share=s.target_quality_share,
                             dataset=s.dataset, k=s.k, encoder=encoder, exploration=s.exploration,
                             bandit_state=state, cache_dir=self.cache_dir)

    @staticmethod
    def _probe(decision: Decision, models: Models) -> np.ndarray | None:
        if not selection_algorithm(decision.selection.algorithm).needs_embedding:
            return None
        return models.encoder(decision.selection.encoder).encode_one("probe")


async def close_retired(old: Selectors, new: Selectors) -> None:
    """Close the Redis clients of bandit states the new snapshot no longer uses (their sync stops with them)."""
    kept = {id(state) for state in new.bandit_states}
    for state in old.bandit_states:
        if id(state) not in kept:
            with contextlib.suppress(Exception):
                await state.close()


async def sync_forever(current: Callable[[], Selectors], interval_s: float = 1.0) -> None:
    """Share the bandit counts of the snapshot in force through Redis (a background task of the router)."""
    while True:
        for state in current().bandit_states:
            with contextlib.suppress(Exception):  # RedisBanditState logs its own outages
                await state.sync()
        await asyncio.sleep(interval_s)


def feedback(ranking: Ranking | None, selector: Selector | None, decision_model: str) -> BanditFeedback | None:
    """What a bandit needs at Report for the request it placed (None for other algorithms)."""
    if not isinstance(selector, BanditSelector) or ranking is None or ranking.evidence.context is None:
        return None
    return BanditFeedback(selector, ranking.evidence.context, decision_model)
