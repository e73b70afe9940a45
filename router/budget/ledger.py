"""The shared budget ledger: one Lua script (ledger.lua) run atomically by Redis.

Every router replica talks to the same Redis, so reservations made by one are seen by
all. Each call is idempotent per reservation id (a retried reserve or settle never
counts twice), which lets the client retry once on a dropped connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchpoint.config.model import Budget
from switchpoint.router.budget.cost import limit_units
from switchpoint.router.budget.scope import BudgetInstance

KEY_PREFIX = "sp:budget:"
ROLLING_BUCKETS = 60
ACTIONS = {"Observe": 0, "Downgrade": 1, "Reject": 2}
ADMITTED, REJECTED, DOWNGRADE = 0, 1, 2


@dataclass(frozen=True)
class BudgetState:
    spent: int
    reserved: int  # held by requests in flight, this request's included once admitted
    limit: int
    window_end_ms: int  # end of the current bucket (calendar: of the window)
    free_at_ms: int  # when the refused request would fit (0: when reservations settle, or never)
    exhausted: bool

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.spent - self.reserved)


@dataclass(frozen=True)
class LedgerReply:
    status: int
    culprit: int | None  # index of the budget that rejected or asks for a downgrade
    states: tuple[BudgetState, ...]


def window(budget: Budget) -> tuple[int, int]:
    """(bucket_ms, nbuckets) of a budget's window."""
    total_ms = budget.window_seconds * 1000
    if budget.window_reset == "Calendar":
        return total_ms, 1
    return total_ms // ROLLING_BUCKETS, ROLLING_BUCKETS


class RedisLedger:
    def __init__(self, url: str, timeout_s: float = 0.25, max_connections: int = 64):
        self.url = url
        # A blocking pool: a burst of concurrent Routes waits (up to the timeout) for a connection
        # instead of failing with "too many connections" and falling back to the failure policy.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1),
        )
        self.client = aioredis.Redis(connection_pool=pool)
        source = resources.files("switchpoint.router.budget").joinpath("ledger.lua").read_text(encoding="utf-8")
        self.script = self.client.register_script(source)

    async def reserve(self, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]],
                      force_soft: bool) -> LedgerReply:
        return await self._run("reserve", rid, ttl_ms, lines, force_soft)

    async def settle(self, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]]) -> LedgerReply:
        return await self._run("settle", rid, ttl_ms, lines, False)

    async def peek(self, instances: list[BudgetInstance]) -> LedgerReply:
        return await self._run("peek", "", 0, [(i, 0) for i in instances], False)

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()

    async def _run(self, op: str, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]],
                   force_soft: bool) -> LedgerReply:
        keys: list[str] = []
        args: list[str | int] = [op, rid, ttl_ms, int(force_soft)]
        for instance, units in lines:
            base = f"{KEY_PREFIX}{instance.key}:"
            keys += [base + "spend", base + "res", base + "resexp", base + "reserved"]
            bucket_ms, nbuckets = window(instance.budget)
            args += [limit_units(instance.budget), units, bucket_ms, nbuckets, ACTIONS[instance.budget.action]]
        raw = await self.script(keys=keys, args=args)
        status, culprit, *states = raw
        return LedgerReply(
            status=int(status),
            culprit=int(culprit) - 1 if int(culprit) else None,
            states=tuple(BudgetState(int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), bool(int(s[5])))
                         for s in states),
        )
