"""bandit: Thompson sampling on Beta posteriors per (context bucket, model), learning from Report feedback.

Exploration rule. Each (context, model) keeps s = sum of reported quality and f = sum of (1 - quality) (a
quality in [0, 1]; a 0/1 outcome is the Bernoulli case). At rank time every candidate draws
theta ~ Beta(a0 + s / e, b0 + f / e), e = the exploration scale (1: the posterior as is; > 1: wider, more
exploration; 0: no draw, the posterior mean — greedy). Candidates are ordered by theta - lambda x cost, where
cost is the candidate's price for this request (known, not learned), so the reward being maximised is
quality - lambda x cost. `explored` in the evidence: the first candidate differs from the greedy one.

Context buckets: the sign pattern of the request embedding on `context_bits` fixed random hyperplanes (seeded
by plane_seed, so every replica buckets alike); 0 bits, or no embedding, is one global bucket "-". Every
feedback also counts in the global bucket, and a context bucket's posterior starts from the global one's,
weighing at most `backoff` observations (shrinkage toward the global prior): a bucket that has seen little
ranks as the whole traffic says, instead of exploring from scratch, and learns its own way as its counts grow.

Shared state. BanditState keeps the sums in process. RedisBanditState mirrors them in one Redis hash: feedback
is recorded locally at once (the next rank sees it) and `await sync()` flushes the pending sums with one Lua
script (HINCRBYFLOAT per field, atomic, idempotent per flush batch: a batch whose reply was lost is retried
with the same id and counted once) that returns the whole hash, which becomes the local view. While Redis is
unreachable the replica keeps learning from its own feedback (in-process fallback) and flushes when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from switchpoint.router.selectors.base import (
    COST_BASES,
    CandidateModel,
    CandidateScore,
    Ranking,
    SelectionRequest,
    SelectorError,
    check_candidates,
    check_lambda,
    decision_costs,
    ranking,
)
from switchpoint.router.selectors.registry import SelectionAlgorithm, SelectorSettings, register

log = logging.getLogger("switchpoint.router.selectors")
GLOBAL = "-"


@dataclass(frozen=True)
class BanditParams:
    lam: float = 0.0  # quality points per USD per request
    exploration: float = 1.0  # 0 (greedy) .. 10
    context_bits: int = 4  # 2**bits context buckets (0: one)
    prior: tuple[float, float] = (1.0, 1.0)  # Beta(a0, b0) before any feedback
    seed: int | None = None  # of the Thompson draws (None: OS entropy); tests and the benchmark fix it
    plane_seed: int = 20240917  # of the bucketing hyperplanes: the same on every replica
    cost_basis: str = "absolute"  # or "relative" (see costquality.py)
    backoff: float = 20.0  # pseudo-observations of the global posterior's mean in each context bucket (0: none)

    def __post_init__(self) -> None:
        check_lambda(self.lam)
        if not (isinstance(self.backoff, int | float) and math.isfinite(self.backoff) and self.backoff >= 0):
            raise SelectorError(f"backoff must be a finite number >= 0, got {self.backoff!r}")
        if self.cost_basis not in COST_BASES:
            raise SelectorError(f"cost_basis must be one of {', '.join(COST_BASES)}, not {self.cost_basis!r}")
        if not (isinstance(self.exploration, int | float) and math.isfinite(self.exploration)
                and 0 <= self.exploration <= 10):
            raise SelectorError(f"exploration must be in [0, 10], got {self.exploration!r}")
        if isinstance(self.context_bits, bool) or not isinstance(self.context_bits, int) \
                or not 0 <= self.context_bits <= 12:
            raise SelectorError(f"context_bits must be an integer in [0, 12], got {self.context_bits!r}")
        a, b = self.prior
        if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
            raise SelectorError(f"prior must be two finite numbers > 0, got {self.prior!r}")


def _field(context: str, model: str, which: str) -> str:
    return f"{context}|{model}|{which}"


class BanditState:
    """Sums of feedback per (context, model), in process only."""

    def __init__(self) -> None:
        self._base: dict[str, float] = {}  # everything known (local: all; Redis: the last snapshot)
        self._pending: dict[str, float] = {}  # recorded here, not yet flushed anywhere

    @property
    def shared(self) -> bool:
        return False

    def value(self, name: str) -> float:
        return self._base.get(name, 0.0) + self._pending.get(name, 0.0)

    def counts(self, context: str, models: Sequence[str]) -> np.ndarray:
        """(m, 2): (s, f) per model."""
        return np.array([[self.value(_field(context, m, "s")), self.value(_field(context, m, "f"))] for m in models])

    def add(self, context: str, model: str, success: float, failure: float) -> None:
        for which, v in (("s", success), ("f", failure)):
            name = _field(context, model, which)
            self._pending[name] = self._pending.get(name, 0.0) + v


SYNC_LUA = """
-- KEYS[1] the state hash, KEYS[2] this flush batch's marker; ARGV[1] marker TTL (s), then field, delta pairs
if #ARGV > 1 and redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisBanditState(BanditState):
    """The sums in a Redis hash shared by every replica, with the in-process state as the fallback."""

    BATCH_TTL_S = 86400

    def __init__(self, url: str, name: str, timeout_s: float = 0.25, prefix: str = "sp:bandit:"):
        super().__init__()
        from switchpoint.router import redisconn

        # one server or a Redis Cluster (asked of the server); one sync a second needs few connections
        self.client = redisconn.async_client(url, timeout_s=timeout_s, max_connections=4, blocking=False)
        self.key = f"{prefix}{{{name}}}"  # hash tag: the state and its batch markers share a cluster slot
        self.script = self.client.register_script(SYNC_LUA)
        self._inflight: tuple[str, dict[str, float]] | None = None
        self.reachable = False

    @property
    def shared(self) -> bool:
        return self.reachable

    def value(self, name: str) -> float:
        extra = self._inflight[1].get(name, 0.0) if self._inflight else 0.0
        return super().value(name) + extra

    async def sync(self) -> bool:
        """Flush pending feedback and pull everyone's; False (and the state stays local) if Redis failed."""
        from redis.exceptions import RedisError

        if self._inflight is None and self._pending:
            self._inflight, self._pending = (uuid.uuid4().hex, self._pending), {}
        args: list[str | float] = [self.BATCH_TTL_S]
        batch_id = "none"
        if self._inflight is not None:
            batch_id = self._inflight[0]
            for name, delta in self._inflight[1].items():
                args += [name, repr(delta)]
        try:
            reply = await self.script(keys=[self.key, f"{self.key}:batch:{batch_id}"], args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            if self.reachable:
                log.warning("bandit state: Redis unreachable, learning in process until it is back: %s", exc)
            self.reachable = False
            return False
        self._inflight = None
        it = iter(reply)
        self._base = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in zip(it, it, strict=True)}
        self.reachable = True
        return True

    async def run(self, interval_s: float = 1.0) -> None:
        """Sync forever (a background task of the router)."""
        while True:
            await self.sync()
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        from switchpoint.router import redisconn

        await redisconn.close(self.client)


class BanditSelector:
    algorithm = "bandit"

    def __init__(self, params: BanditParams, state: BanditState | None = None):
        self.params = params
        self.state = state if state is not None else BanditState()
        self.rng = np.random.default_rng(params.seed)
        self._planes: dict[int, np.ndarray] = {}

    def context(self, embedding: np.ndarray | None) -> str:
        bits = self.params.context_bits
        if bits == 0 or embedding is None:
            return GLOBAL
        emb = np.asarray(embedding, dtype=np.float64).reshape(-1)
        planes = self._planes.get(emb.shape[0])
        if planes is None:
            planes = np.random.default_rng(self.params.plane_seed).standard_normal((bits, emb.shape[0]))
            self._planes[emb.shape[0]] = planes
        code = int(((planes @ emb) > 0) @ (1 << np.arange(bits)))
        return f"{bits}:{code}"

    def rank(self, candidates: Sequence[CandidateModel], request: SelectionRequest) -> Ranking:
        check_candidates(candidates)
        ctx = self.context(request.embedding)
        models = [c.model for c in candidates]
        counts = self.state.counts(ctx, models)
        if ctx != GLOBAL and self.params.backoff > 0:
            counts = counts + shrink_toward(self.state.counts(GLOBAL, models), self.params.backoff)
        a0, b0 = self.params.prior
        e = self.params.exploration
        mean = (a0 + counts[:, 0]) / (a0 + b0 + counts.sum(axis=1))
        theta = mean if e == 0 else self.rng.beta(a0 + counts[:, 0] / e, b0 + counts[:, 1] / e)
        cost = np.array([c.cost(request.input_tokens, request.output_tokens) for c in candidates])
        weighed = decision_costs(cost[None, :], self.params.cost_basis)[0]
        lam = self.params.lam
        reward = theta - lam * weighed
        order = sorted(range(len(candidates)), key=lambda i: (-reward[i], cost[i], i))
        greedy = min(range(len(candidates)), key=lambda i: (-(mean[i] - lam * weighed[i]), cost[i], i))
        known = counts.sum(axis=1) > 0
        scores = {i: CandidateScore(c.key, c.model, float(mean[i]), float(cost[i]), float(reward[i]), bool(known[i]))
                  for i, c in enumerate(candidates)}
        notes = () if self.state.shared or not isinstance(self.state, RedisBanditState) else \
            ("bandit state in process only (Redis unreachable)",)
        return ranking(self.algorithm, candidates, order, scores, lam=lam, explored=order[0] != greedy,
                       context=ctx, notes=notes)

    def feedback(self, context: str, model: str, quality: float) -> None:
        """A Report's outcome for the model that served: quality in [0, 1] (1 = good answer)."""
        if not (isinstance(quality, int | float) and math.isfinite(quality) and 0 <= quality <= 1):
            raise SelectorError(f"bandit feedback quality must be in [0, 1], got {quality!r}")
        self.state.add(context, model, float(quality), 1.0 - float(quality))
        if context != GLOBAL:
            self.state.add(GLOBAL, model, float(quality), 1.0 - float(quality))


def shrink_toward(global_counts: np.ndarray, weight: float) -> np.ndarray:
    """(m, 2): the global bucket's (success, failure) counts per model scaled down to at most `weight`
    observations (a model the whole traffic has seen once weighs as one observation, not as `weight`)."""
    n = global_counts.sum(axis=1, keepdims=True)
    scale = np.divide(weight, n, out=np.zeros_like(n), where=n > 0)
    return global_counts * np.minimum(scale, 1.0)


def _build_bandit(s: SelectorSettings) -> BanditSelector:
    if s.target_quality_share is not None:
        raise SelectorError("bandit takes lambda, not a target quality share (it has no dataset to translate it)")
    state = s.bandit_state if isinstance(s.bandit_state, BanditState) else None
    return BanditSelector(BanditParams(lam=0.0 if s.lam is None else s.lam, exploration=s.exploration,
                                       cost_basis=s.cost_basis), state)


register(SelectionAlgorithm("bandit", _build_bandit, needs_embedding=True, learns=True))
