"""The shared budget ledger: one Lua script (ledger.lua) run atomically by Redis.

Every router replica talks to the same Redis, so reservations made by one are seen by
all. Each call is idempotent per reservation id (a retried reserve or settle never
counts twice), which lets the client retry once on a dropped connection.

Keys (ledger.lua says what each holds), for a budget instance K (namespace/name, with /tenant
for EachTenant) of namespace N: `sp:budget:{N}:K:spend`, `:res`, `:resexp`, `:reserved`. The hash
tag {N} puts every budget of a namespace in one Redis Cluster slot: the budgets that apply to a
request are all of its policy's namespace (scope.applicable), so one script call still reserves in
all of them atomically. The price on a cluster: one namespace's budget traffic is served by one
master (namespaces spread over the masters); the cache and the bandits spread by their own tags.

The script is called over one pipelined connection (router/resp.py) when Redis is a single server: it is
on the path of every budgeted Route, and redis-py's client doubled that call's cost. A cluster keeps
redis-py's cluster client, which follows the slot map.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from switchpoint.config.model import Budget
from switchpoint.router import redisconn, resp
from switchpoint.router.budget.cost import limit_units
from switchpoint.router.budget.scope import BudgetInstance

KEY_PREFIX = "sp:budget:"
ROLLING_BUCKETS = 60
ACTIONS = {"Observe": 0, "Downgrade": 1, "Reject": 2}
ADMITTED, REJECTED, DOWNGRADE, DUPLICATE = 0, 1, 2, 3


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
    granted: tuple[int, ...] = ()  # per budget, what a grant added to the lease


def key_base(instance: BudgetInstance) -> str:
    """The prefix of an instance's four keys; the hash tag is its namespace (see the module docstring)."""
    return f"{KEY_PREFIX}{{{instance.budget.namespace}}}:{instance.key}:"


def mark_key(instance: BudgetInstance, rid: str) -> str:
    """A request's settle-once mark, in its budgets' slot (one Redis call settles and marks)."""
    return f"{KEY_PREFIX}{{{instance.budget.namespace}}}:settled:{rid}"


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
        self.client = redisconn.async_client(url, timeout_s=timeout_s, max_connections=max_connections, retries=1)
        source = resources.files("switchpoint.router.budget").joinpath("ledger.lua").read_text(encoding="utf-8")
        self.pipe = None if redisconn.is_cluster(url) else resp.for_url(url, timeout_s)
        self.script = (self.client.register_script(source) if self.pipe is None
                       else resp.PipelinedScript(self.pipe, source, retries=1))

    async def reserve(self, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]],
                      force_soft: bool) -> LedgerReply:
        return await self._run("reserve", rid, ttl_ms, lines, force_soft)

    async def settle(self, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]],
                     once: bool = False, via: list[tuple[str, int]] | None = None) -> LedgerReply:
        """once: take the request's settle-once mark in the same atomic call; status DUPLICATE (nothing done)
        when another Report already took it. via: per line, the lease the request was admitted from and the
        share it took ("", 0: it reserved on its own)."""
        return await self._run("settle_once" if once else "settle", rid, ttl_ms, lines, False, via)

    async def grant(self, lease: str, ttl_ms: int, instance: BudgetInstance, want: int, least: int = 1) -> LedgerReply:
        """Lease up to `want` of a budget instance for this router: less near the limit, nothing when that would be
        less than `least` (`granted` says)."""
        return await self._run("grant", lease, ttl_ms, [(instance, want)], False, [("", least)])

    async def release(self, lease: str, ttl_ms: int, instance: BudgetInstance, unused: int) -> LedgerReply:
        """Give back a lease's unused part; the shares of its requests in flight stay held until they settle."""
        return await self._run("release", lease, ttl_ms, [(instance, unused)], False)

    async def peek(self, instances: list[BudgetInstance]) -> LedgerReply:
        """The standing of budgets of any namespaces: one script call per namespace (one slot each)."""
        by_tag: dict[str, list[int]] = {}
        for i, instance in enumerate(instances):
            by_tag.setdefault(instance.budget.namespace, []).append(i)
        states: list[BudgetState | None] = [None] * len(instances)
        for indexes in by_tag.values():
            reply = await self._run("peek", "", 0, [(instances[i], 0) for i in indexes], False)
            for i, state in zip(indexes, reply.states, strict=True):
                states[i] = state
        return LedgerReply(0, None, tuple(s for s in states if s is not None))

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        await redisconn.close(self.client)

    async def _run(self, op: str, rid: str, ttl_ms: int, lines: list[tuple[BudgetInstance, int]],
                   force_soft: bool, via: list[tuple[str, int]] | None = None) -> LedgerReply:
        keys: list[str] = []
        args: list[str | int] = [op, rid, ttl_ms, int(force_soft)]
        for i, (instance, units) in enumerate(lines):
            base = key_base(instance)
            keys += [base + "spend", base + "res", base + "resexp", base + "reserved"]
            bucket_ms, nbuckets = window(instance.budget)
            lease, share = via[i] if via else ("", 0)
            args += [limit_units(instance.budget), units, bucket_ms, nbuckets, ACTIONS[instance.budget.action],
                     lease, share]
        if op == "settle_once":
            keys.append(mark_key(lines[0][0], rid))
        raw = await self.script(keys=keys, args=args)
        status, culprit, *states = raw
        return LedgerReply(
            status=int(status),
            culprit=int(culprit) - 1 if int(culprit) else None,
            states=tuple(BudgetState(int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), bool(int(s[5])))
                         for s in states),
            granted=tuple(int(s[6]) for s in states),
        )
