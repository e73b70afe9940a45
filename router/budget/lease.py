"""Budget leases: most budgeted Routes admitted from budget this router already holds, with no Redis call.

Reserving in the shared ledger costs every budgeted Route a Redis round trip (0.4-1 ms on these machines, most of it
waking up for the reply). Far from a budget's limit that call decides nothing, so each router holds a *lease* per
budget instance: one reservation, in the same ledger, of up to LEASE_REQUESTS requests' worth (and at most 1/8 of
what is free: ledger.lua). A Route whose every budget line fits in its lease takes its share locally and is admitted;
the Report settles that share exactly as it would its own reservation, on any replica (the ticket names the lease).
The ledger never holds more than the limit, leases included, so the overspend bound of enforcer.py is unchanged.

A lease admits for LEASE_PERIOD_S at most, then its unused part goes back; what stays held is the share of its requests
still in flight. A new lease is asked for in the background when the current one runs low. Near the limit the grants
shrink (1/8 of what is free), and once a request no longer fits, requests reserve one by one again, as without leases:
refusals, downgrades and `free_at` come from the ledger itself. While the ledger is unreachable no lease is used (the
failure policy applies, as for every other request).

The price of a lease: a router that dies holding one has its unused part charged when the lease expires (the in-flight
TTL + 60 s), like a reservation never reported; BudgetStatus's `reserved` counts the routers' leases; and the standing a
lease-admitted Decision shows is the one of the lease's grant, at most LEASE_PERIOD_S old.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from switchpoint.router.budget.enforcer import BudgetEnforcer, BudgetLine
from switchpoint.router.budget.ledger import BudgetState
from switchpoint.router.budget.scope import BudgetInstance

log = logging.getLogger("switchpoint.router.budget")

LEASE_SHARE = 8  # a grant takes at most this fraction of what is free (ledger.lua's LEASE_SHARE)
LEASE_REQUESTS = 32  # a lease asks for this many times the amount of the request that found none
LEAST_REQUESTS = 4  # and takes nothing smaller than this many: a smaller lease saves fewer calls than it costs
LEASE_PERIOD_S = 2.0  # a lease admits for this long at most, then its unused part goes back
REFILL_AT = 0.25  # with less than this fraction of a lease left, the next one is asked for
MIN_MARGIN_S = 8.0  # leases only when the reservation ttl leaves this long after a lease's period to give it back


def leases_allowed(reservation_ttl_s: float) -> bool:
    """Whether a lease can be given back well before the ledger would charge it as expired (its ttl: the
    reservations')."""
    return reservation_ttl_s >= LEASE_PERIOD_S + MIN_MARGIN_S


@dataclass
class Lease:
    id: str
    granted: int
    taken: int
    started: float
    state: BudgetState  # the instance's standing when the lease was granted

    @property
    def left(self) -> int:
        return self.granted - self.taken


class LeaseBook:
    """This router's leases, one per budget instance in use. `take` runs on the event loop and never awaits."""

    def __init__(self, enforcer: BudgetEnforcer, owner: str, clock: Callable[[], float] = time.monotonic,
                 enabled: bool = True):
        self.enforcer = enforcer
        self.enabled = enabled and leases_allowed(enforcer.ttl_ms / 1000)
        self.owner = owner  # this router's id: lease ids never collide across routers
        self.clock = clock
        self.leases: dict[BudgetInstance, Lease] = {}
        self._seq = itertools.count(1)
        self._asking: set[BudgetInstance] = set()
        self._starved: dict[BudgetInstance, float] = {}  # a grant came back too small: not asked again before then
        self._tasks: set[asyncio.Task] = set()

    def take(self, lines: list[BudgetLine]) -> list[BudgetLine] | None:
        """The lines admitted from leases (each with its lease and standing), or None when one does not fit (the
        request then reserves on its own, and `reserved` may ask for a lease) or the ledger is unreachable. Asks for
        the next lease where one runs low."""
        if not self.enabled or not self.enforcer.store_up:
            return None
        now = self.clock()
        found: list[Lease] = []
        for line in lines:
            lease = self.leases.get(line.instance)
            if lease is not None and now - lease.started >= LEASE_PERIOD_S:
                self._retire(line.instance)
                lease = None
            if lease is None:
                continue
            if lease.left - line.units < REFILL_AT * lease.granted:
                self._ask(line.instance, line.units, now)
            if lease.left >= line.units:
                found.append(lease)
        if len(found) < len(lines):
            return None
        taken = []
        for line, lease in zip(lines, found, strict=True):
            lease.taken += line.units
            taken.append(BudgetLine(line.instance, line.units, lease.state, lease.id))
        return taken

    def reserved(self, lines: tuple[BudgetLine, ...]) -> None:
        """A request reserved on its own and the ledger answered with each budget's standing: ask for a lease where
        that standing says one would be granted (none for a budget too small or too near its limit to be worth it)."""
        if not self.enabled:
            return
        now = self.clock()
        for line in lines:
            state = line.state
            if (state is not None and line.instance not in self.leases
                    and state.remaining // LEASE_SHARE >= max(1, line.units) * LEAST_REQUESTS):
                self._ask(line.instance, line.units, now)

    def sweep(self) -> None:
        """Give back the leases past their period (a background task calls this every second)."""
        now = self.clock()
        for instance in [i for i, lease in self.leases.items() if now - lease.started >= LEASE_PERIOD_S]:
            self._retire(instance)
        for instance in [i for i, until in self._starved.items() if until <= now]:
            del self._starved[instance]

    async def close(self) -> None:
        """Give every lease back (the router is stopping), once the grants under way have landed."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for instance in list(self.leases):
            self._retire(instance)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _ask(self, instance: BudgetInstance, units: int, now: float) -> None:
        if instance in self._asking or self._starved.get(instance, 0.0) > now:
            return
        self._asking.add(instance)
        self._spawn(self._grant(instance, units))

    async def _grant(self, instance: BudgetInstance, units: int) -> None:
        lease_id = f"{self.owner}:lease:{next(self._seq)}"
        units = max(1, units)
        try:
            got = await self.enforcer.grant(lease_id, instance, units * LEASE_REQUESTS, units * LEAST_REQUESTS)
        finally:
            self._asking.discard(instance)
        if got is None:
            return
        granted, state = got
        if not granted:  # near the limit: requests reserve on their own (not asked again for a lease period)
            self._starved[instance] = self.clock() + LEASE_PERIOD_S
            return
        if instance in self.leases:
            self._retire(instance)
        self.leases[instance] = Lease(lease_id, granted, 0, self.clock(), state)

    def _retire(self, instance: BudgetInstance) -> None:
        lease = self.leases.pop(instance)
        self._spawn(self.enforcer.release(lease.id, instance, lease.left))

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the ledger's own failures are handled below us (enforcer.py); this is a bug or a client library's
            log.error("budget lease call failed", exc_info=task.exception())
