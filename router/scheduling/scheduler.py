"""The scheduler: filters, weighted scorers and a picker over a pool's replicas; prefill/decode pairs.

`place` decides without side effects (the pipeline places every candidate pool to list
fallbacks); `commit` records the choice once the request is admitted: the prefix index
learns what the chosen replica now holds, and its prefill backlog grows.

For a pool with prefill-role replicas, the decode replica is chosen first (it is the
destination); a prefill replica is added only when the prompt tokens the decode replica
does not have cached reach `min_uncached_tokens` — below that, moving the KV cache costs
more than prefilling locally.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from switchpoint.config.model import Candidate, Pool, Replica, Role
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.backlog import PrefillBacklog
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.prefix import TOKENS_PER_BLOCK, PrefixIndex, request_blocks
from switchpoint.router.scheduling.profiles import Profile, profile_for
from switchpoint.router.scheduling.scorers import SCORERS, ReplicaFacts, ScoringInput


@dataclass(frozen=True)
class Placement:
    replica: Replica  # the destination (decodes)
    prefill: Replica | None  # set when the request is disaggregated
    alternatives: tuple[Replica, ...]  # other decode-capable replicas, best first
    uncached_tokens: int  # prompt tokens the prefilling replica has to compute
    blocks: tuple[int, ...]  # the request's prefix blocks
    scores: tuple[tuple[str, float], ...] = ()  # replica -> weighted score, for traces


def ready_replicas(pool: Pool, fleet: FleetState) -> list[Replica]:
    """The pool's replicas in rotation. Local mode knows only static endpoints."""
    return [r for r in pool.static_replicas if fleet.ready(pool, r)]


class Scheduler:
    def __init__(self, ledger: InflightLedger, fleet: FleetState | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.ledger = ledger
        self.fleet = fleet or FleetState()
        self.clock = clock
        self.rng = rng or random.Random()
        self.prefix = PrefixIndex()
        self.backlog = PrefillBacklog()
        self._turns: dict[str, itertools.count] = defaultdict(itertools.count)

    def place(self, candidate: Candidate, req: RouteInput) -> Placement | None:
        """None when the pool has no ready replica that can decode."""
        pool, config = candidate.pool, candidate.scheduling
        profile = profile_for(config)
        replicas = ready_replicas(pool, self.fleet)
        decoders = [r for r in replicas if r.role.decodes]
        if not decoders:
            return None
        blocks = request_blocks(req, candidate.model)
        now = self.clock()
        ranked, facts, scores = self._rank(pool, profile, config.prefill_tokens_per_second, decoders, blocks,
                                           req.input_tokens, now)
        chosen = ranked[0]
        uncached = facts[chosen.address].uncached_tokens
        prefill = None
        prefillers = [r for r in replicas if r.role is Role.PREFILL]
        if prefillers and uncached >= config.min_uncached_tokens:
            p_ranked, p_facts, _ = self._rank(pool, profile, config.prefill_tokens_per_second, prefillers, blocks,
                                              req.input_tokens, now)
            prefill = p_ranked[0]
            uncached = p_facts[prefill.address].uncached_tokens
        return Placement(chosen, prefill, tuple(ranked[1:]), uncached, blocks, scores)

    def fallback(self, candidate: Candidate) -> Replica | None:
        """A ready decode-capable replica of the pool, least in flight first: cheap, for the fallback list."""
        decoders = [r for r in ready_replicas(candidate.pool, self.fleet) if r.role.decodes]
        return min(decoders, key=lambda r: self.ledger.load(r.address)) if decoders else None

    def commit(self, candidate: Candidate, placement: Placement) -> None:
        """The request was admitted there: remember what the replicas now hold and owe."""
        now = self.clock()
        prefilling = placement.prefill or placement.replica
        self.backlog.add(prefilling.address, placement.uncached_tokens, now,
                         candidate.scheduling.prefill_tokens_per_second)
        self.prefix.record(placement.replica.address, placement.blocks)
        if placement.prefill is not None:
            self.prefix.record(placement.prefill.address, placement.blocks)

    def _rank(self, pool: Pool, profile: Profile, rate: float, replicas: list[Replica], blocks: tuple[int, ...],
              prompt_tokens: int, now: float) -> tuple[list[Replica], dict[str, ReplicaFacts], tuple]:
        facts = {r.address: self._facts(pool, r, blocks, prompt_tokens, now, rate) for r in replicas}
        if profile.picker == "round-robin":
            shift = next(self._turns[pool.key]) % len(replicas)
            return replicas[shift:] + replicas[:shift], facts, ()
        if profile.picker == "random":
            return self.rng.sample(replicas, len(replicas)), facts, ()
        x = ScoringInput([facts[r.address] for r in replicas], rate)
        total = [0.0] * len(replicas)
        for name, weight in profile.weights:
            for i, score in enumerate(SCORERS[name](x)):
                total[i] += weight * score
        # max-score picker; ties broken at random, as GIE's
        jitter = self.rng.random
        order = sorted(range(len(replicas)), key=lambda i: (-total[i], jitter()))
        return [replicas[i] for i in order], facts, tuple((replicas[i].address, total[i]) for i in order)

    def _facts(self, pool: Pool, replica: Replica, blocks: tuple[int, ...], prompt_tokens: int, now: float,
               rate: float) -> ReplicaFacts:
        address = replica.address
        matched = self.prefix.match(address, blocks) if blocks else 0
        return ReplicaFacts(
            address,
            self.fleet.fresh(pool, replica, now) if pool.metrics is not None else None,
            self.ledger.load(address),
            self.backlog.tokens(address, now, rate),
            matched,
            len(blocks),
            max(1, prompt_tokens - matched * TOKENS_PER_BLOCK),
        )
