"""The scheduler: filters, weighted scorers and a picker over a pool's replicas; prefill/decode pairs.

`place` decides without side effects (the pipeline places every candidate pool to list
fallbacks); `commit` records the choice once the request is admitted: the prefix index
learns what the chosen replica now holds (and when it will have computed it: a
prompt sent there before then is counted uncached), and its prefill backlog grows.

For a pool with prefill-role replicas, the decode replica is chosen first (it is the
destination); a prefill replica is added only when the prompt tokens the decode replica
does not have cached reach `min_uncached_tokens` — below that, moving the KV cache costs
more than prefilling locally.

A Route costs about the same whatever the pool's size: the pool's replicas and their slots
in the per-replica tables are prepared once per config (PoolView), scorers run over numpy
columns, the prefix index is looked up per block rather than per replica, and the picker
orders only the chosen replica and its MAX_ALTERNATIVES fallbacks. `retain` prunes every
per-replica and per-pool state to what a new config names.

With several active routers, each announces what it commits (`announce`) and applies what its peers
announce (`apply`): their backlog and prefix blocks join its own, their in-flight counts are added to its
own ledger's (router/scheduling/peers.py).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from switchpoint.config.model import Candidate, Pool, Replica, RouterConfig, SchedulingConfig
from switchpoint.router.frozen import frozen
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.backlog import PrefillBacklog
from switchpoint.router.scheduling.filters import FILTERS
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.peers import (
    BLOCK_KEY,
    PeerCommit,
    PeerLoads,
    PeerMessage,
    PeerRelease,
    PeerSettled,
    PeerView,
)
from switchpoint.router.scheduling.pickers import PICKERS, PickContext
from switchpoint.router.scheduling.pools import PoolView, ReplicaSource, StaticReplicas, build_view, named_replicas
from switchpoint.router.scheduling.prefix import TOKENS_PER_BLOCK, PrefixIndex, request_blocks
from switchpoint.router.scheduling.profiles import Profile, profile_for
from switchpoint.router.scheduling.scorers import SCORERS, ScoringInput

MAX_ALTERNATIVES = 4  # ranked fallbacks inside the chosen pool (the selection keeps at most 4 fallbacks in all)
DESTINATION_FILTER, PREFILL_FILTER = "decode", "prefill"  # the role filter of each stage of a placement
BELIEVED_SCORER = "prefix-cache"  # the scorer that reads the blocks believed held, computed or not

log = logging.getLogger("switchpoint.scheduler")


@frozen
class Placement:
    replica: Replica  # the destination (decodes)
    prefill: Replica | None  # set when the request is disaggregated
    alternatives: tuple[Replica, ...]  # other decode-capable replicas, best first (at most MAX_ALTERNATIVES)
    uncached_tokens: int  # prompt tokens the prefilling replica has to compute
    blocks: tuple[int, ...]  # the request's prefix blocks
    scores: tuple[tuple[str, float], ...] = ()  # replica -> weighted score of those ranked, for traces


@frozen
class _Ranked:
    replicas: tuple[Replica, ...]  # best first
    uncached_tokens: int  # of the first
    scores: tuple[tuple[str, float], ...]


def _copy(rng: random.Random) -> random.Random:
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


class Scheduler:
    def __init__(self, ledger: InflightLedger, fleet: FleetState | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 replicas: ReplicaSource | None = None, name: str = "",
                 announce: Callable[[PeerMessage], None] | None = None):
        self.ledger = ledger
        self.name = name  # this router, as its peers know it
        self.announce = announce  # tells the peers of each committed and released placement (None: no peers)
        ledger.on_drop = self._released
        self.peers = PeerView()
        self._foreign_blocks = False  # a peer's blocks were hashed with another seed (warned once)
        self.fleet = fleet or FleetState()
        self.source = replicas or StaticReplicas()
        self.clock = clock
        self.rng = rng or random.Random()
        # ties are broken with numpy's generator, seeded from a copy of `rng` so that `rng`'s own sequence (the
        # random picker's) is the one a caller seeded
        self._np_rng = np.random.default_rng(_copy(self.rng).getrandbits(64))
        self.prefix = PrefixIndex()
        self.backlog = PrefillBacklog()
        self._turns: dict[str, itertools.count] = defaultdict(itertools.count)
        self._views: dict[str, PoolView] = {}
        self._named: tuple[frozenset[str], frozenset[str]] | None = None  # (pool keys, addresses) of the config

    def place(self, candidate: Candidate, req: RouteInput) -> Placement | None:
        """None when the pool has no ready replica that can decode."""
        config = candidate.scheduling
        profile = profile_for(config)
        view = self._view(candidate.pool)
        ready = self._filtered(view, profile)
        decoders = FILTERS[DESTINATION_FILTER](view, ready, self.fleet)
        if not len(decoders):
            return None
        blocks = request_blocks(req, candidate.model)
        now = self.clock()
        computed = self.prefix.matches(blocks, now) if blocks else None  # what spares each replica prefill
        matched = computed  # what GIE's prefix-cache scorer reads: blocks count from the moment they were sent
        if blocks and any(name == BELIEVED_SCORER for name, _ in profile.weights):
            matched = self.prefix.matches(blocks)
        best = self._rank(view, profile, config, decoders, len(blocks), matched, computed, req.input_tokens, now)
        uncached = best.uncached_tokens
        prefill = None
        prefillers = FILTERS[PREFILL_FILTER](view, ready, self.fleet)
        if len(prefillers) and uncached >= config.min_uncached_tokens:
            ranked = self._rank(view, profile, config, prefillers, len(blocks), matched, computed, req.input_tokens,
                                now)
            prefill, uncached = ranked.replicas[0], ranked.uncached_tokens
        return Placement(best.replicas[0], prefill, best.replicas[1:], uncached, blocks, best.scores)

    def fallback(self, candidate: Candidate) -> Replica | None:
        """A ready decode-capable replica of the pool, least in flight first: cheap, for the fallback list."""
        view = self._view(candidate.pool)
        decoders = FILTERS[DESTINATION_FILTER](view, self._filtered(view, profile_for(candidate.scheduling)),
                                               self.fleet)
        best: Replica | None = None
        fewest = 0
        peers = self.peers.loads(self.clock()) if self.peers else {}
        for i in decoders:  # the first idle one ends the search
            address = view.addresses[i]
            load = self.ledger.load(address) + peers.get(address, 0)
            if best is None or load < fewest:
                best, fewest = view.replicas[i], load
                if not load:
                    break
        return best

    def commit(self, candidate: Candidate, placement: Placement) -> None:
        """The request was admitted there: remember what the replicas now hold and owe.

        After a `retain`, replicas the retained config does not name are not remembered (a request routed on the
        replaced config may commit after the swap)."""
        prefill = placement.prefill.address if placement.prefill else ""
        rate = candidate.scheduling.prefill_tokens_per_second
        self._hold(placement.replica.address, prefill, placement.uncached_tokens, rate, placement.blocks)
        if self.announce is not None:
            self.announce(PeerCommit(self.name, placement.replica.address, prefill, placement.uncached_tokens, rate,
                                     placement.blocks))

    def apply(self, message: PeerMessage) -> None:
        """What a peer router announced: a placement it committed or released, or its in-flight counts."""
        if message.origin == self.name:
            return
        now = self.clock()
        if isinstance(message, PeerLoads):
            self.peers.replace(message, now)
            return
        if isinstance(message, PeerRelease):
            self.peers.released(message.origin, message.replicas, now)
            return
        if isinstance(message, PeerSettled):
            self.ledger.settle(message.request_id)  # ours, if we routed it: the peer settled it, we let it go
            return
        replicas = (message.replica, message.prefill) if message.prefill else (message.replica,)
        self.peers.committed(message.origin, replicas, now)
        blocks: tuple[int, ...] | None = message.blocks
        if message.block_key != BLOCK_KEY:
            blocks = None
            if not self._foreign_blocks:
                self._foreign_blocks = True
                log.warning("router '%s' hashes prefix blocks with another seed: its blocks are ignored (start "
                            "every router replica with the same PYTHONHASHSEED)", message.origin)
        self._hold(message.replica, message.prefill, message.uncached_tokens, message.rate, blocks)

    def _hold(self, replica: str, prefill: str, uncached_tokens: int, rate: float,
              blocks: tuple[int, ...] | None) -> None:
        """A placement, this router's or a peer's: the prefilling replica owes its uncached prompt, and the
        replicas hold its blocks (None: blocks this router cannot read). Replicas the config no longer names
        (after a `retain`) are not remembered."""
        prefilling = prefill or replica
        now = self.clock()
        # the blocks are computed once the backlog ahead and this prompt are prefilled (the KV transfer to a decode
        # replica is left out: milliseconds)
        ready_at = now + max(1, uncached_tokens) / rate
        if self._remembers(prefilling):
            ready_at = self.backlog.add(prefilling, uncached_tokens, now, rate)
        if blocks is None:
            return
        for address in (replica, prefill):
            if address and self._remembers(address):
                self.prefix.record(address, blocks, ready_at, now)

    def settled_elsewhere(self, request_id: str) -> None:
        """This router settled a request another one routed (a Report carries its ticket): tell them."""
        if self.announce is not None:
            self.announce(PeerSettled(self.name, request_id))

    def _released(self, entry: InflightEntry) -> None:
        if self.announce is not None:
            self.announce(PeerRelease(self.name, entry.replicas))

    def retain(self, config: RouterConfig) -> None:
        """Drop the state of every replica and pool `config` does not name: call on each config swap, and when a
        watched pool's replicas change."""
        pools = frozenset(config.pools)
        addresses = named_replicas(config.pools.values(), self.source)
        self._named = (pools, addresses)
        self.fleet.retain(addresses)
        self.backlog.retain(addresses)
        self.prefix.retain(addresses)
        self._views.clear()  # the tables may reuse freed slots
        for key in [k for k in self._turns if k not in pools]:
            del self._turns[key]

    def tracked(self) -> tuple[frozenset[str], frozenset[str]]:
        """(pool keys, replica addresses) this scheduler holds any state for: for tests and introspection."""
        pools = frozenset(self._views) | frozenset(self._turns)
        addresses = (frozenset(self.fleet.replicas) | frozenset(self.fleet.table.slot_of)
                     | frozenset(self.backlog.table.slot_of) | frozenset(self.prefix.table.slot_of))
        return pools, addresses

    def _remembers(self, address: str) -> bool:
        return self._named is None or address in self._named[1]

    def _view(self, pool: Pool) -> PoolView:
        view = self._views.get(pool.key)
        if view is None or view.pool is not pool or view.version != self.source.version(pool.key):
            view = build_view(pool, self.source, self.fleet, self.backlog, self.prefix)
            if self._named is None or pool.key in self._named[0]:
                self._views[pool.key] = view
        return view

    def _filtered(self, view: PoolView, profile: Profile) -> np.ndarray:
        """The positions of the pool's replicas that pass the profile's filters."""
        positions = view.positions
        for name in profile.filters:
            positions = FILTERS[name](view, positions, self.fleet)
        return positions

    def _rank(self, view: PoolView, profile: Profile, config: SchedulingConfig, positions: np.ndarray,
              total_blocks: int, matched: np.ndarray | None, computed: np.ndarray | None, prompt_tokens: int,
              now: float) -> _Ranked:
        n = len(positions)
        every = positions is view.positions  # no filter removed a replica: the slot arrays need no indexing

        def slots(of: np.ndarray) -> np.ndarray:
            return of if every else of[positions]

        # leading blocks per candidate (None: nobody holds any); one gather when both read the same counts
        prefix = np.zeros(n, dtype=np.int64) if matched is None else matched[slots(view.prefix_slots)]
        if computed is None:  # nothing computed anywhere: the whole prompt
            uncached = np.full(n, max(1, prompt_tokens), dtype=np.int64)
        else:
            done = prefix if computed is matched else computed[slots(view.prefix_slots)]
            uncached = np.maximum(1, prompt_tokens - done * TOKENS_PER_BLOCK)
        scores = None
        if profile.weights:
            rate = config.prefill_tokens_per_second

            def gather(column: str) -> np.ndarray:
                if column == "backlog_tokens":
                    return self.backlog.tokens_at(slots(view.backlog_slots), now, rate)
                if column == "inflight":
                    return self._loads(view, positions)
                return self.fleet.column(view.pool, slots(view.fleet_slots), now, column)

            x = ScoringInput(rate, total_blocks, prefix, uncached, gather)
            for name, weight in profile.weights:
                score = SCORERS[name](x)
                weighted = score if weight == 1.0 else weight * score
                scores = weighted if scores is None else scores + weighted
        context = PickContext(self.rng, self._np_rng, self._turns[view.pool.key].__next__)
        order = PICKERS[profile.picker](scores, n, min(n, 1 + MAX_ALTERNATIVES), context)
        ranked = order.tolist()
        replicas = tuple(view.replicas[i] for i in (ranked if every else positions[order].tolist()))
        traced = () if scores is None else tuple(zip([r.address for r in replicas], scores[order].tolist(),
                                                      strict=True))
        return _Ranked(replicas, int(uncached[ranked[0]]), traced)

    def _loads(self, view: PoolView, positions: np.ndarray) -> np.ndarray:
        """The in-flight count per candidate (the ledger's, plus the peers'), walking whichever is shorter: the
        candidates or the loads."""
        loads = self.ledger.loads()
        if self.peers:
            for address, count in self.peers.loads(self.clock()).items():
                loads[address] = loads.get(address, 0) + count
        if len(loads) >= len(positions):
            return np.fromiter((loads.get(view.addresses[i], 0) for i in positions), dtype=np.float64,
                               count=len(positions))
        everyone = np.zeros(len(view.replicas))
        for address, count in loads.items():
            i = view.index.get(address)
            if i is not None:
                everyone[i] = count
        return everyone[positions]
