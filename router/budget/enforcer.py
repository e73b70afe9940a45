"""Reserve at Route, settle at Report, and what happens when the ledger cannot be reached.

Admission rule: a request is admitted by a budget only if spent + reserved + its expected
amount stays within the limit, so the reservations of everything admitted never exceed
the limit. Spend can pass the limit only by what admitted requests use beyond their
reservation (a prompt longer than estimated, or a completion longer than expected when
max_tokens is not given): overspend <= sum over admitted requests of max(0, actual - reserved).

When several budgets apply, the strictest outcome wins: Reject > Downgrade > Observe.
When Redis is unreachable (or was within the last `breaker_s` seconds), each budget's
failurePolicy decides: any Closed budget refuses the request; otherwise it passes
unenforced, and its usage is not counted. A Report that cannot be settled is queued
(up to MAX_PENDING) and settled when the ledger answers again, so no request admitted
with a reservation is lost from the ledger; settling is idempotent, so a retry never
counts twice.

A reserve whose connection broke may still have run in Redis (the script executed, the
reply was lost). The request is then admitted unenforced, so a zero-amount settle for its
id is queued: it releases such an orphaned reservation when the ledger answers again
(and does nothing if the reserve never ran), instead of leaving it held until it expires.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from switchpoint.router.budget.ledger import (
    ADMITTED,
    DOWNGRADE,
    DUPLICATE,
    REJECTED,
    BudgetState,
    LedgerReply,
    RedisLedger,
)
from switchpoint.router.budget.scope import BudgetInstance
from switchpoint.router.frozen import frozen

log = logging.getLogger("switchpoint.router.budget")

LedgerCall = Callable[[RedisLedger], Awaitable[LedgerReply]]


@frozen
class BudgetLine:
    instance: BudgetInstance
    units: int  # this request's expected (at Route) or actual (at Report) amount
    state: BudgetState | None = None
    lease: str = ""  # the lease (router/budget/lease.py) the request was admitted from; "": it reserved on its own
    share: int = 0  # at Report, for a request admitted from a lease: what it took of the lease at Route


@frozen
class Settlement:
    """What a settle did: the budgets' states after it (None: queued, the ledger was unreachable), and whether it
    was the request's first settlement (None: not asked, or not known while queued)."""

    states: tuple[BudgetState, ...] | None
    first: bool | None = None


@frozen
class BudgetCheck:
    """admitted | rejected | downgrade | unenforced (store down, all Open) | refused (store down, a Closed budget)."""

    outcome: str
    lines: tuple[BudgetLine, ...]
    deciding: BudgetInstance | None = None

    @property
    def reserved(self) -> bool:
        return self.outcome == "admitted"


class BudgetEnforcer:
    MAX_PENDING = 100_000

    def __init__(self, ledger: RedisLedger | None, reservation_ttl_s: float, breaker_s: float = 1.0):
        self.ledger = ledger
        self.ttl_ms = int(reservation_ttl_s * 1000)
        self.breaker_s = breaker_s
        self._down_until = 0.0
        self.store_errors = 0
        # ledger calls to make once it answers again: settlements, orphaned reservations' and leases' releases
        self.pending: deque[LedgerCall] = deque(maxlen=self.MAX_PENDING)

    @property
    def store_up(self) -> bool:
        return self.ledger is not None and time.monotonic() >= self._down_until

    async def reserve(self, rid: str, lines: list[BudgetLine], force_soft: bool = False) -> BudgetCheck:
        if not lines:
            return BudgetCheck("admitted", ())
        try:
            reply = await self._call(lambda ledger: ledger.reserve(
                rid, self.ttl_ms, [(ln.instance, ln.units) for ln in lines], force_soft))
        except _StoreDown as down:
            if down.attempted:
                self.pending.append(self._settle_call(rid, [BudgetLine(ln.instance, 0) for ln in lines]))
            return self._unreachable(lines)
        with_state = tuple(BudgetLine(ln.instance, ln.units, st) for ln, st in zip(lines, reply.states, strict=True))
        if reply.status == ADMITTED:
            return BudgetCheck("admitted", with_state)
        assert reply.culprit is not None
        outcome = "rejected" if reply.status == REJECTED else "downgrade"
        assert reply.status in (REJECTED, DOWNGRADE)
        return BudgetCheck(outcome, with_state, lines[reply.culprit].instance)

    async def settle(self, rid: str, lines: list[BudgetLine], once: bool = False) -> Settlement:
        """Record actual usage and release the reservation (queued while the store is unreachable). once: and take
        the request's settle-once mark in the same call (`first` says whether this was the first settlement)."""
        if not lines:
            return Settlement(())
        await self.flush_pending()
        call = self._settle_call(rid, lines, once)
        try:
            reply = await self._call(call)
        except _StoreDown:
            self.pending.append(call)
            log.warning("budget settle for %s queued: ledger unreachable (%d waiting)", rid, len(self.pending))
            return Settlement(None)
        if reply.status == DUPLICATE:
            return Settlement(None, first=False)
        return Settlement(reply.states, first=True if once else None)

    async def grant(self, lease: str, instance: BudgetInstance, want: int,
                    least: int) -> tuple[int, BudgetState] | None:
        """Lease up to `want` of a budget instance, if at least `least`: (granted, its standing then); None when the
        ledger could not be reached (a grant whose reply was lost is given back, in full, when it answers again)."""
        try:
            reply = await self._call(lambda ledger: ledger.grant(lease, self.ttl_ms, instance, want, least))
        except _StoreDown as down:
            if down.attempted:
                self.pending.append(lambda ledger: ledger.release(lease, self.ttl_ms, instance, want))
            return None
        return reply.granted[0], reply.states[0]

    async def release(self, lease: str, instance: BudgetInstance, unused: int) -> None:
        """Give back a lease's unused part (queued while the ledger is unreachable)."""
        self.pending.append(lambda ledger: ledger.release(lease, self.ttl_ms, instance, unused))
        await self.flush_pending()

    async def flush_pending(self) -> int:
        """Make the queued ledger calls while the ledger answers; returns how many were made."""
        done = 0
        while self.pending and self.store_up:
            call = self.pending.popleft()  # taken before awaiting: concurrent flushers take different calls
            try:
                await self._call(call)
            except _StoreDown:
                self.pending.appendleft(call)
                break
            done += 1
        return done

    def _settle_call(self, rid: str, lines: list[BudgetLine], once: bool = False) -> LedgerCall:
        units = [(ln.instance, ln.units) for ln in lines]
        via = [(ln.lease, ln.share) for ln in lines]
        return lambda ledger: ledger.settle(rid, self.ttl_ms, units, once, via)

    async def peek(self, instances: list[BudgetInstance]) -> tuple[BudgetState, ...] | None:
        if not instances:
            return ()
        try:
            return (await self._call(lambda ledger: ledger.peek(instances))).states
        except _StoreDown:
            return None

    async def _call(self, op: LedgerCall) -> LedgerReply:
        if not self.store_up:
            raise _StoreDown(attempted=False)
        assert self.ledger is not None
        try:
            return await op(self.ledger)
        except (RedisError, OSError, TimeoutError) as exc:
            self.store_errors += 1
            self._down_until = time.monotonic() + self.breaker_s
            log.error("budget store %s unreachable (%s); failurePolicy applies for %.1fs",
                      self.ledger.url, exc, self.breaker_s)
            raise _StoreDown(attempted=True) from exc

    def _unreachable(self, lines: list[BudgetLine]) -> BudgetCheck:
        closed = next((ln.instance for ln in lines if ln.instance.budget.failure_policy == "Closed"), None)
        return BudgetCheck("refused" if closed else "unenforced", tuple(lines), closed)


class _StoreDown(Exception):
    def __init__(self, attempted: bool):
        super().__init__()
        self.attempted = attempted  # the call reached the network, so it may have run in Redis
