"""The cache store interface and the in-process store (the embedded default when no Redis is configured).

Two tiers behind one call: the exact tier (a key per scope and normalised conversation)
answers identical requests; the vector tier answers the nearest entry of the same scope
whose cosine similarity reaches the threshold, whose guard (numbers, negation, languages,
units...) matches the request's, and that the pair verifier (verifier.py: swapped roles, a
swapped content word, a learned score at the decision's target precision) accepts. Every entry
is also its own exact entry: the vector tier's element id is the exact key.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from switchpoint.router.cache.guard import canonical_tokens, guards_match, salient
from switchpoint.router.cache.scope import CacheScope
from switchpoint.router.cache.verifier import DEFAULT_TARGET_PRECISION, Verifier, default_verifier

CANDIDATES = 4  # nearest entries tried in order: the nearest may have expired or have a different guard
VERIFIED = 2  # of those whose guard matches, how many the verifier may read (~0.1-0.3 ms each)
VERIFIER: Verifier = default_verifier()


@dataclass(frozen=True)
class Entry:
    key: str  # the exact key; also the element id in the vector tier
    content: str
    decision: str  # the decision that stored it
    created_at: float  # unix seconds
    tokens: int = 0  # completion tokens of the response (0: unknown)
    text: str = ""  # the embedded text of the request that stored it (compared by same_question)

    @property
    def size(self) -> int:
        return len(self.content.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class NewEntry:
    scope: CacheScope
    entry: Entry
    vector: np.ndarray | None  # (dim,) float32, L2-normalised; None: exact tier only
    ttl_s: float

    @property
    def guard(self) -> str:
        """Computed by the store's writer (off the request path)."""
        return salient(self.entry.text)


@dataclass(frozen=True)
class StoreHit:
    entry: Entry
    similarity: float  # cosine; 1.0 for the exact tier
    tier: str  # exact | semantic


@dataclass(frozen=True)
class Probe:
    """One lookup as the store sees it."""

    scope: CacheScope
    key: str
    vector: np.ndarray | None
    threshold: float
    text: str = ""  # the request's embedded text
    max_tokens: int | None = None  # the request's limit: entries with more completion tokens do not answer
    target_precision: float = DEFAULT_TARGET_PRECISION  # the verifier's operating point (verifier.Verifier)

    def fits(self, entry: Entry) -> bool:
        return self.max_tokens is None or entry.tokens <= self.max_tokens

    @property
    def guard(self) -> str:
        """Only computed when the vector tier has candidates (memoised in guard.salient)."""
        return salient(self.text)

    def prepare(self) -> None:
        """The request's side of pick()'s work, memoised (its guard and canonical tokens): a store runs it while
        it waits for its server's search, on the loop's idle time, so that a candidate hit only pays for the
        stored texts' side. Texts that verify() would send to a worker thread are left to it."""
        if len(self.text) <= INLINE_CHARS:
            salient(self.text)
            canonical_tokens(self.text)


def pick(probe: Probe, candidates: Iterable[tuple[Entry, str, float]],
         verifier: Verifier | None = None) -> StoreHit | None:
    """The first candidate (entry, its guard, cosine), nearest first, that answers the probe: its guard matches
    and the pair verifier accepts it at the probe's target precision; at most VERIFIED candidates are verified.
    CPU work on the texts, bounded by the texts' length: verify() runs it in a worker thread when a text is long."""
    verifier = verifier or VERIFIER
    verified = 0
    for entry, guard, similarity in candidates:
        if similarity < probe.threshold or verified == VERIFIED:
            break
        if not probe.fits(entry) or not guards_match(guard, probe.guard):
            continue
        verified += 1
        if verifier.accepts(probe.text, entry.text, similarity, probe.target_precision):
            return StoreHit(entry, min(similarity, 1.0), "semantic")
    return None


# The verifier's own threads: not the loop's default executor, where a candidate hit would queue behind other
# stages' long jobs (a PII scan of a 1 MB prompt takes ~0.4 s).
_VERIFY_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-verify")
# Texts up to this many characters are verified on the event loop: the work is bounded (the guard reads at most
# this much, the alignment at most guard.MAX_TOKENS tokens a side, at most VERIFIED candidates: ~0.1-0.4 ms),
# and on this 2-core machine the two thread wake-ups of a hop cost more than that (bench cache: lookup p50 +0.5 ms
# at 100k entries). Longer texts, whose guard costs grow with their length, are verified in a worker thread.
INLINE_CHARS = 2000


async def verify(probe: Probe, candidates: Sequence[tuple[Entry, str, float]]) -> StoreHit | None:
    """pick(), only when a candidate reaches the threshold; in a worker thread when a text is long."""
    if not candidates or candidates[0][2] < probe.threshold:
        return None
    if len(probe.text) <= INLINE_CHARS and all(len(entry.text) <= INLINE_CHARS for entry, _, _ in candidates):
        return pick(probe, candidates)
    return await asyncio.get_running_loop().run_in_executor(_VERIFY_THREADS, pick, probe, candidates)


class CacheStore(Protocol):
    name: str

    async def lookup(self, probe: Probe) -> StoreHit | None: ...

    async def write(self, entries: Sequence[NewEntry]) -> int:
        """Store entries (larger than the store's max_entry_bytes are refused); returns how many were stored."""
        ...

    async def flush(self, policy: str, tenant: str | None = None) -> int: ...

    async def stats(self) -> dict[str, object]: ...

    async def close(self) -> None: ...


@dataclass
class _Item:
    entry: Entry
    scope: CacheScope
    expires: float
    guard: str
    has_vector: bool


@dataclass
class _Matrix:
    """One scope's vectors: rows [0, n) are live, ids[i] names row i; deletes swap the last row in."""

    dim: int
    rows: np.ndarray = field(init=False)
    ids: list[str] = field(default_factory=list)
    where: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = np.zeros((16, self.dim), dtype=np.float32)

    def add(self, key: str, vector: np.ndarray) -> None:
        if key in self.where:
            self.rows[self.where[key]] = vector
            return
        n = len(self.ids)
        if n == len(self.rows):
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        self.rows[n] = vector
        self.ids.append(key)
        self.where[key] = n

    def remove(self, key: str) -> None:
        i = self.where.pop(key, None)
        if i is None:
            return
        last = len(self.ids) - 1
        if i != last:
            self.rows[i] = self.rows[last]
            self.ids[i] = self.ids[last]
            self.where[self.ids[i]] = i
        self.ids.pop()

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        n = len(self.ids)
        if n == 0 or vector.shape != (self.dim,):  # another encoder's vector: nothing to compare with
            return []
        sims = self.rows[:n] @ vector
        top = np.argpartition(-sims, k - 1)[:k] if n > k else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(self.ids[i], float(sims[i])) for i in top]


class MemoryStore:
    """Exact dict + one numpy matrix per scope, TTL, and at most max_entries with least-recently-used eviction.

    One process only (each router replica has its own); brute-force search is exact and, at the sizes one
    process holds (tens of thousands of entries per scope), takes well under a millisecond.
    """

    name = "memory"

    def __init__(self, max_entries: int = 10_000, max_entry_bytes: int = 1 << 20):
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self._items: OrderedDict[str, _Item] = OrderedDict()  # by exact key, least recently used first
        self._scopes: dict[str, _Matrix] = {}
        self.evicted = 0
        self.expired = 0

    async def lookup(self, probe: Probe) -> StoreHit | None:
        now = time.time()
        item = self._live(probe.key, now)
        if item is not None and item.scope.digest == probe.scope.digest and probe.fits(item.entry):
            self._items.move_to_end(probe.key)
            return StoreHit(item.entry, 1.0, "exact")
        matrix = self._scopes.get(probe.scope.digest)
        if probe.vector is None or matrix is None or probe.threshold > 1.0:
            return None
        live = [(item.entry, item.guard, sim) for key, sim in matrix.nearest(probe.vector, CANDIDATES)
                if (item := self._live(key, now)) is not None]
        hit = await verify(probe, live)
        if hit is not None:
            self._items.move_to_end(hit.entry.key)
        return hit

    async def write(self, entries: Sequence[NewEntry]) -> int:
        stored = 0
        for new in entries:
            if new.entry.size > self.max_entry_bytes:
                continue
            self._drop(new.entry.key)
            self._items[new.entry.key] = _Item(new.entry, new.scope, time.time() + new.ttl_s, new.guard,
                                               new.vector is not None)
            if new.vector is not None:
                vector = np.asarray(new.vector, dtype=np.float32)
                matrix = self._scopes.get(new.scope.digest)
                if matrix is None or matrix.dim != vector.shape[0]:
                    matrix = self._scopes[new.scope.digest] = _Matrix(vector.shape[0])
                matrix.add(new.entry.key, vector)
            stored += 1
        while len(self._items) > self.max_entries:
            self._drop(next(iter(self._items)))
            self.evicted += 1
        return stored

    async def flush(self, policy: str, tenant: str | None = None) -> int:
        doomed = [k for k, it in self._items.items()
                  if it.scope.policy == policy and (tenant is None or it.scope.tenant == tenant)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def stats(self) -> dict[str, object]:
        policies: dict[str, int] = {}
        for it in self._items.values():
            policies[it.scope.policy] = policies.get(it.scope.policy, 0) + 1
        return {"store": self.name, "entries": len(self._items), "scopes": len(self._scopes),
                "evicted": self.evicted, "expired": self.expired, "policies": policies}

    async def close(self) -> None:
        self._items.clear()
        self._scopes.clear()

    def _live(self, key: str, now: float) -> _Item | None:
        item = self._items.get(key)
        if item is not None and item.expires <= now:
            self._drop(key)
            self.expired += 1
            return None
        return item

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is None or not item.has_vector:
            return
        matrix = self._scopes.get(item.scope.digest)
        if matrix is not None:
            matrix.remove(key)
            if not matrix.ids:
                del self._scopes[item.scope.digest]
