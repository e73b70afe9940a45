"""SemanticCache: the facade the router calls at Route (lookup) and at Report (store).

Fault behaviour: the cache never raises into the request path and never makes a request
wait on a broken store. A lookup that fails or takes longer than the store's timeout (tens of
ms) returns outcome "unavailable"; the failure opens a breaker for `breaker_s` seconds during
which lookups answer "unavailable" at once and writes are dropped (counted). The first call
after the breaker closes tries the store again, so the cache reconnects by itself. An outage is
logged once when it starts and once when it ends.

Writes never slow Route or Report: store() only puts the entry on a bounded queue (no await);
a background task drains it in batches (pipelined). When the queue is full the entry is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redis.exceptions import RedisError, ResponseError

from switchpoint.router.cache.scope import CacheScope, Conversation, conversation, exact_key
from switchpoint.router.cache.store import CacheStore, Entry, MemoryStore, NewEntry, Probe
from switchpoint.router.cache.verifier import DEFAULT_TARGET_PRECISION
from switchpoint.router.request import ChatTurn

log = logging.getLogger("switchpoint.router.cache")

STORE_ERRORS = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


@dataclass(frozen=True)
class CacheHit:
    content: str
    similarity: float  # 1.0 for the exact tier
    age_s: float
    decision: str  # the decision that stored the entry
    tier: str  # exact | semantic
    tokens: int = 0  # completion tokens of the cached response (0: unknown)


@dataclass(frozen=True)
class Lookup:
    outcome: str  # hit | miss | unavailable
    hit: CacheHit | None = None
    latency_ms: float = 0.0


def _usable(embedding: np.ndarray | None) -> np.ndarray | None:
    """The vector as float32, or None (exact tier only) for none, an empty text's zero vector, or NaNs."""
    if embedding is None:
        return None
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    return vector if float(np.linalg.norm(vector)) > 0 else None  # NaN > 0 is False too


def as_conversation(text: str | Conversation) -> Conversation:
    return text if isinstance(text, Conversation) else conversation([ChatTurn("user", text)])


class SemanticCache:
    def __init__(self, store: CacheStore | None = None, *, queue_size: int = 4096, batch_size: int = 64,
                 lookup_timeout_s: float = 0.05, write_timeout_s: float = 5.0, breaker_s: float = 1.0):
        self.backend: CacheStore = store if store is not None else MemoryStore()
        self.lookup_timeout_s = lookup_timeout_s
        self.write_timeout_s = write_timeout_s
        self.breaker_s = breaker_s
        self.batch_size = batch_size
        self.queue: asyncio.Queue[NewEntry] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._down_since: float | None = None
        self._refusal_logged = -1e9
        self.counters = {"hit_exact": 0, "hit_semantic": 0, "miss": 0, "unavailable": 0, "queued": 0,
                         "written": 0, "dropped_full": 0, "dropped_unavailable": 0, "dropped_error": 0,
                         "too_large": 0, "store_errors": 0}

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def lookup(self, scope: CacheScope, text: str | Conversation, embedding: np.ndarray | None,
                     threshold: float, max_tokens: int | None = None,
                     target_precision: float | None = None) -> Lookup:
        """The entry answering this request, if any. text: the request's Conversation (conversation(messages)),
        or a single user message; embedding: its embed_text encoded (None: exact tier only); target_precision:
        the pair verifier's operating point (None: verifier.DEFAULT_TARGET_PRECISION)."""
        start = time.perf_counter()
        if not self.available:
            self.counters["unavailable"] += 1
            return Lookup("unavailable")
        conv = as_conversation(text)
        vector = _usable(embedding)
        target = DEFAULT_TARGET_PRECISION if target_precision is None else target_precision
        probe = Probe(scope, exact_key(scope, conv), vector, threshold, conv.embed_text, max_tokens, target)
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                found = await self.backend.lookup(probe)
        except STORE_ERRORS as exc:
            self._failed(exc)
            self.counters["unavailable"] += 1
            return Lookup("unavailable", latency_ms=(time.perf_counter() - start) * 1000)
        except Exception:  # a bug must not fail the request; it is logged with its traceback and counted
            log.exception("cache lookup failed")
            self.counters["store_errors"] += 1
            return Lookup("unavailable", latency_ms=(time.perf_counter() - start) * 1000)
        self._recovered()
        latency = (time.perf_counter() - start) * 1000
        if found is None:
            self.counters["miss"] += 1
            return Lookup("miss", latency_ms=latency)
        self.counters["hit_" + found.tier] += 1
        e = found.entry
        hit = CacheHit(e.content, found.similarity, max(0.0, time.time() - e.created_at), e.decision, found.tier,
                       e.tokens)
        return Lookup("hit", hit, latency)

    def store(self, scope: CacheScope, text: str | Conversation, embedding: np.ndarray | None, response: str,
              decision: str, ttl_s: float, max_entry_bytes: int, tokens: int = 0) -> bool:
        """Queue an entry (check storable() first); False when it was dropped (too large, queue full, store down)."""
        if len(response.encode("utf-8", "surrogatepass")) > max_entry_bytes:
            self.counters["too_large"] += 1
            return False
        if not self.available:
            self.counters["dropped_unavailable"] += 1
            return False
        conv = as_conversation(text)
        vector = _usable(embedding)
        entry = Entry(exact_key(scope, conv), response, decision, time.time(), tokens, conv.embed_text)
        try:
            self.queue.put_nowait(NewEntry(scope, entry, vector, ttl_s))
        except asyncio.QueueFull:
            self.counters["dropped_full"] += 1
            return False
        self.counters["queued"] += 1
        self._ensure_writer()
        return True

    async def flush(self, policy: str, tenant: str | None = None) -> int:
        """Remove a policy's entries (one tenant's when given); returns how many entries were removed."""
        return await self.backend.flush(policy, tenant)

    def stats(self) -> dict[str, object]:
        return {"store": self.backend.name, "available": self.available, "queue": self.queue.qsize(),
                "queue_size": self.queue.maxsize, **self.counters}

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued entry was written or dropped (tests, benchmarks, shutdown)."""
        async with asyncio.timeout(timeout_s):
            await self.queue.join()

    async def close(self, drain_s: float = 1.0) -> None:
        """Write what is queued (for up to drain_s seconds), then stop the writer and close the store."""
        with contextlib.suppress(TimeoutError):
            await self.drain(drain_s)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.backend.close()

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(), name="cache-writer")

    async def _drain(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _write(self, batch: Sequence[NewEntry]) -> None:
        if not self.available:
            self.counters["dropped_unavailable"] += len(batch)
            return
        try:
            async with asyncio.timeout(self.write_timeout_s):
                written = await self.backend.write(batch)
        except ResponseError as exc:  # Redis answered but refused (OOM under maxmemory noeviction): no outage
            self.counters["dropped_error"] += len(batch)
            if time.monotonic() - self._refusal_logged > 60:
                self._refusal_logged = time.monotonic()
                log.warning("cache writes refused by the store (logged once a minute): %s", exc)
            return
        except STORE_ERRORS as exc:
            self._failed(exc)
            self.counters["dropped_unavailable"] += len(batch)
            return
        except Exception:
            log.exception("cache write failed")
            self.counters["dropped_error"] += len(batch)
            return
        self._recovered()
        self.counters["written"] += written
        self.counters["too_large"] += len(batch) - written

    def _failed(self, exc: BaseException) -> None:
        self.counters["store_errors"] += 1
        self._down_until = time.monotonic() + self.breaker_s
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("cache store %s unreachable (%s: %s); routing without the cache, retrying every %.1fs",
                      self.backend.name, type(exc).__name__, exc, self.breaker_s)

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("cache store %s reachable again after %.1fs", self.backend.name,
                        time.monotonic() - self._down_since)
            self._down_since = None

