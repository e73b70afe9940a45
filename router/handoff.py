"""What router replicas share so that any of them settles any request, exactly once.

The routing replica signs a ticket into the Decision (router/tickets.py) and keeps its in-flight entry as
before (its replica load, the Report's trace link). A Report settles on whichever replica receives it:

* the replica that routed uses its in-flight entry; any other rebuilds the entry from the ticket (budget
  lines and prices, the bandit's context and arm, the matrix cell) against its own config;
* the replica takes the request's settle-once mark in Redis, kept as long as the reservation (the in-flight
  TTL + min(60 s, the TTL)): the first Report settles, any later one for the same id, on any replica, is a
  no-op. A request that reserved budget takes it inside the ledger's settle script (router/budget/ledger.lua,
  `sp:budget:{namespace}:settled:<reservation>`), atomically with the budget settle and at no extra round
  trip; any other takes `SET sp:settled:<id> NX` (with the hand-off's GETDEL in the same round trip). Without
  Redis (or while it is unreachable) the mark is kept in this process only;
* a cache miss whose answer may be stored hands its cache write (scope, conversation, embedding) to Redis
  at Route (`sp:handoff:<id>`, written off the request path, only when the settle key is shared); a Report
  on another replica takes it back (GETDEL) and stores the answer; one on the routing replica drops it (off
  its path).

A Report that reaches another replica tells the routing replica over the peer channel (router/peering.py,
`PeerSettled`), which then lets its in-flight entry (and the replica load it counts) go; without the
channel the entry stays until its TTL expires it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from switchpoint.config.model import Pricing
from switchpoint.router import redisconn
from switchpoint.router.budget.enforcer import BudgetLine
from switchpoint.router.budget.gate import BudgetAdmission
from switchpoint.router.budget.scope import BudgetInstance
from switchpoint.router.cache import CacheOptions, CacheScope, Conversation
from switchpoint.router.caching import CacheWrite
from switchpoint.router.inflight import InflightEntry
from switchpoint.router.selecting import BanditFeedback
from switchpoint.router.selectors import BanditSelector
from switchpoint.router.tickets import Ticket, TicketSigner

if TYPE_CHECKING:  # the core imports this module
    from switchpoint.router.core.snapshot import Snapshot

log = logging.getLogger("switchpoint.router.handoff")

MARK_PREFIX = "sp:settled:"
HANDOFF_PREFIX = "sp:handoff:"
MAX_LOCAL_MARKS = 100_000


class Handoff:
    def __init__(self, signer: TicketSigner, redis_url: str | None = None, *, shared: bool = False,
                 ttl_s: float = 600.0, mark_ttl_s: float | None = None, timeout_s: float = 0.25):
        """shared: the settle key is the deployment's (not this process's own), so other replicas may settle our
        tickets and the cache write is worth handing off."""
        self.signer = signer
        self.shared = shared
        self.ttl_s = ttl_s
        self.mark_ms = int((mark_ttl_s if mark_ttl_s is not None else ttl_s + 60) * 1000)
        self.client = None if redis_url is None else redisconn.async_client(
            redis_url, timeout_s=timeout_s, max_connections=64, retries=1)
        self._marks: OrderedDict[str, float] = OrderedDict()  # request id -> expiry (monotonic): no Redis
        self._writes: set[asyncio.Task] = set()
        self.errors = 0

    # -- route ---------------------------------------------------------------------------------------------

    def hold_cache(self, request_id: str, write: CacheWrite) -> bool:
        """Hand the cache write to Redis for a Report elsewhere (off the request path); whether it was handed."""
        if not self.shared or self.client is None:
            return False
        task = asyncio.ensure_future(self._hold(request_id, encode_write(write)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return True

    async def _hold(self, request_id: str, payload: bytes) -> None:
        assert self.client is not None
        try:
            await self.client.set(HANDOFF_PREFIX + request_id, payload, px=int(self.ttl_s * 1000))
        except Exception as exc:  # a lost hand-off only loses the cache write of a Report elsewhere
            self.errors += 1
            log.debug("cache hand-off of %s failed: %s", request_id[:64], exc)

    # -- settle --------------------------------------------------------------------------------------------

    async def first(self, request_id: str, want_cache: bool) -> tuple[bool, CacheWrite | None]:
        """Take the settle-once mark: (whether this is the request's first settlement on any replica, the
        handed-off cache write when `want_cache` and there was one). One round trip."""
        if self.client is not None:
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.set(MARK_PREFIX + request_id, 1, nx=True, px=self.mark_ms)
                if self.shared:
                    pipe.getdel(HANDOFF_PREFIX + request_id)
                replies = await pipe.execute()
            except Exception as exc:
                self.errors += 1
                log.warning("settle-once mark for %s not shared (Redis: %s); kept in this process",
                            request_id[:64], exc)
            else:
                held = replies[1] if self.shared else None
                write = decode_write(held) if want_cache and held else None
                return bool(replies[0]), write
        return self._first_here(request_id), None

    async def take(self, request_id: str) -> CacheWrite | None:
        """The handed-off cache write (for a Report on a replica that did not route it), taken once."""
        if not self.shared or self.client is None:
            return None
        try:
            held = await self.client.getdel(HANDOFF_PREFIX + request_id)
        except Exception as exc:
            self.errors += 1
            log.warning("cache hand-off of %s unreadable (Redis: %s); the answer is not stored", request_id[:64], exc)
            return None
        return decode_write(held) if held else None

    def release(self, request_id: str) -> None:
        """Drop a hand-off the routing replica settled itself (off the Report's path)."""
        if self.shared and self.client is not None:
            task = asyncio.ensure_future(self._drop(request_id))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _drop(self, request_id: str) -> None:
        assert self.client is not None
        try:
            await self.client.delete(HANDOFF_PREFIX + request_id)
        except Exception as exc:  # it expires with the in-flight TTL anyway
            log.debug("cache hand-off of %s not dropped: %s", request_id[:64], exc)

    def _first_here(self, request_id: str) -> bool:
        now = time.monotonic()
        while self._marks and (next(iter(self._marks.values())) < now or len(self._marks) >= MAX_LOCAL_MARKS):
            self._marks.popitem(last=False)
        if request_id in self._marks:
            return False
        self._marks[request_id] = now + self.mark_ms / 1000
        return True

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        if self.client is not None:
            await redisconn.close(self.client)


def entry_from(ticket: Ticket, snapshot: Snapshot, cache: CacheWrite | None) -> InflightEntry:
    """The in-flight entry a ticket stands for, against this replica's config: budget lines of budgets it no
    longer knows are left out (their reservations are charged at expiry), a bandit it no longer runs learns
    nothing."""
    pricing = Pricing(*ticket.pricing)
    admission = None
    if ticket.budget is not None:
        budgets = {f"{b.namespace}/{b.name}": b for b in snapshot.config.budgets}
        lines = []
        for key, tenant, units, lease in ticket.budget.lines:
            budget = budgets.get(key)
            if budget is None:
                log.warning("Report for %s names budget %s, which this router's config does not have",
                            ticket.request_id[:64], key)
                continue
            lines.append(BudgetLine(BudgetInstance(budget, tenant), units, lease=lease))
        admission = BudgetAdmission(ticket.budget.reservation_id, ticket.budget.outcome, None, tuple(lines), pricing)
    bandit = None
    if ticket.bandit is not None:
        found = snapshot.selectors.built.get((ticket.policy, ticket.decision))
        if found is not None and isinstance(found[1], BanditSelector):
            bandit = BanditFeedback(found[1], *ticket.bandit)
    return InflightEntry(request_id=ticket.request_id, policy=ticket.policy, decision=ticket.decision,
                         pool=ticket.pool, model=ticket.model, replica=ticket.replica,
                         prefill_replica=ticket.prefill_replica, workload=ticket.workload, budget=admission,
                         pricing=pricing, cache=cache, bandit=bandit)


def encode_write(write: CacheWrite) -> bytes:
    vector = None if write.embedding is None else base64.b64encode(
        np.ascontiguousarray(write.embedding, dtype=np.float32).tobytes()).decode()
    return json.dumps({"s": asdict(write.scope), "c": asdict(write.conversation), "e": vector,
                       "o": asdict(write.options), "d": write.decision}, separators=(",", ":")).encode()


def decode_write(raw: bytes) -> CacheWrite | None:
    try:
        d = json.loads(raw)
        vector = None if d["e"] is None else np.frombuffer(base64.b64decode(d["e"]), dtype=np.float32)
        return CacheWrite(CacheScope(**d["s"]), Conversation(**d["c"]), vector, CacheOptions(**d["o"]), d["d"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable cache hand-off (%s): the answer is not stored", exc)
        return None
