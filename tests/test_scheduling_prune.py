"""Per-replica and per-pool scheduling state follows the config: pods and pools come and go, state does not pile up."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from switchpoint.config.model import Candidate, MetricsConfig, Pool, Pricing, Replica, RouterConfig, SchedulingConfig
from switchpoint.localredis import free_port
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.scheduling.scraper import Scraper

PROFILES = ("switchpoint", "gie-default", "least-request", "round-robin", "random")
SYSTEM = "You answer questions about the ACME fleet, briefly and politely. " * 20


def make_pool(name: str, addresses: list[str], scraped: bool) -> Pool:
    return Pool("default", name, (f"{name}-model",), "gpu", 65536, Pricing(), tuple(Replica(a) for a in addresses),
                metrics=MetricsConfig(interval_ms=20) if scraped else None)


def make_config(pools: list[Pool]) -> RouterConfig:
    return RouterConfig(pools={p.key: p for p in pools}, policies={}, aliases={})


def named(config: RouterConfig) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(config.pools), frozenset(r.address for p in config.pools.values() for r in p.static_replicas)


def request(i: int, rng: random.Random | None = None) -> RouteInput:
    """Most requests share one system prompt (all of them without `rng`)."""
    system = SYSTEM if rng is None or rng.random() < 0.7 else f"system prompt {i} " * 40
    return RouteInput(request_id=str(i), model="m", messages=(ChatTurn("system", system), ChatTurn("user", f"q{i}")))


def test_retain_under_churn_keeps_only_what_the_config_names():
    rng = random.Random(3)
    ledger = InflightLedger(ttl_s=1e9)
    fleet = FleetState()
    sched = Scheduler(ledger, fleet, rng=random.Random(4))
    largest = 0
    i = 0
    for generation in range(40):
        pools = []
        for name in rng.sample(["a", "b", "c", "d", "e"], rng.randint(1, 3)):
            # half the pods of a pool survive a generation; the rest are new
            size = rng.randint(1, 30)
            addresses = [f"{name}-{generation - rng.randint(0, 1)}-{k}:8000" for k in range(size)]
            pools.append(make_pool(name, sorted(set(addresses)), scraped=rng.random() < 0.5))
        config = make_config(pools)
        sched.retain(config)
        want_pools, want_addresses = named(config)
        largest = max(largest, len(want_addresses))
        for pool in pools:
            if pool.metrics is not None:
                for r in pool.static_replicas:
                    fleet.observe(r.address, 0.0, rng.random() * 4, 1.0, rng.random())
        for _ in range(25):
            pool = rng.choice(pools)
            cand = Candidate(pool, pool.models[0], SchedulingConfig(rng.choice(PROFILES)))
            placement = sched.place(cand, request(i, rng))
            ledger.admit(InflightEntry(str(i), "p", "d", pool.key, pool.models[0], placement.replica.address))
            sched.commit(cand, placement)
            assert sched.fallback(cand) is not None
            i += 1
        tracked_pools, tracked_addresses = sched.tracked()
        assert tracked_pools <= want_pools
        assert tracked_addresses <= want_addresses
        assert set(fleet.replicas) <= want_addresses
    # slots are reused: no table ever held more replicas than one config named
    for table in (fleet.table, sched.backlog.table, sched.prefix.table):
        assert table.capacity <= largest
    assert len(sched.prefix) <= largest


def test_retain_keeps_the_state_of_replicas_still_named():
    clock = [100.0]
    sched = Scheduler(InflightLedger(), clock=lambda: clock[0])
    old = make_pool("a", ["h:1", "h:2", "h:3"], scraped=False)
    cand = Candidate(old, old.models[0])
    first = sched.place(cand, request(0))
    sched.commit(cand, first)
    kept = first.replica.address
    backlog = sched.backlog.tokens(kept, clock[0], 5000)
    assert backlog > 0
    new = make_pool("a", [kept, "h:9"], scraped=False)
    sched.retain(make_config([new]))
    assert sched.backlog.tokens(kept, clock[0], 5000) == backlog
    assert sched.prefix.match(kept, first.blocks) == len(first.blocks)
    clock[0] += 10  # the backlog has drained; the prefix is still there
    again = sched.place(Candidate(new, new.models[0]), request(1))
    assert again.replica.address == kept and again.uncached_tokens < first.uncached_tokens


def test_a_reused_slot_starts_empty():
    sched = Scheduler(InflightLedger())
    gone = make_pool("a", ["old:1"], scraped=True)
    sched.fleet.failed("old:1")
    placement = sched.place(Candidate(gone, gone.models[0]), request(0))
    sched.commit(Candidate(gone, gone.models[0]), placement)
    slot = sched.prefix.table.slot_of["old:1"]
    new = make_pool("a", ["new:1"], scraped=True)
    sched.retain(make_config([new]))
    fresh = sched.place(Candidate(new, new.models[0]), request(0))
    assert sched.prefix.table.slot_of["new:1"] == slot  # the freed slot, reused
    assert sched.prefix.match("new:1", placement.blocks) == 0
    assert fresh.uncached_tokens == placement.uncached_tokens
    assert sched.backlog.tokens("new:1", 0.0, 5000) == 0.0
    assert sched.fleet.table.columns["failures"][sched.fleet.table.slot("new:1")] == 0


def test_a_commit_after_the_swap_does_not_bring_back_a_removed_replica():
    sched = Scheduler(InflightLedger())
    old = make_pool("a", ["h:1"], scraped=False)
    cand = Candidate(old, old.models[0])
    placement = sched.place(cand, request(0))  # routed on the old config ...
    sched.retain(make_config([make_pool("a", ["h:2"], scraped=False)]))
    sched.commit(cand, placement)  # ... admitted after the swap
    assert "h:1" not in sched.tracked()[1]


async def _scraper_churn() -> None:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    live = []
    for _ in range(3):
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        live.append(f"127.0.0.1:{port}")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # nothing listens: scrapes fail
    rng = random.Random(5)
    fleet = FleetState()
    sched = Scheduler(InflightLedger(), fleet)
    current = [make_config([])]
    scraper = Scraper(lambda: current[0], fleet)
    task = asyncio.create_task(scraper.run())
    try:
        for _ in range(8):
            addresses = rng.sample(live + dead, rng.randint(1, 4))
            current[0] = make_config([make_pool("a", addresses, scraped=True)])
            sched.retain(current[0])  # as the router does on a swap
            _, want = named(current[0])
            serving = {a for a in want if a in live}
            deadline = asyncio.get_running_loop().time() + 5.0
            rounds = 0
            while True:  # scrape rounds (20 ms apart) against the new config
                await asyncio.sleep(0.02)
                rounds += 1
                assert set(fleet.replicas) <= want  # never, not even for a moment, a replica of an older config
                healthy = {a for a, m in fleet.replicas.items() if m.failures == 0 and m.waiting == 1}
                if rounds >= 5 and scraper.tracked() <= want and serving <= healthy:
                    break
                assert asyncio.get_running_loop().time() < deadline, (scraper.tracked(), want, healthy)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


def test_the_scraper_follows_the_config():
    asyncio.run(asyncio.wait_for(_scraper_churn(), timeout=30))


class Watched:
    """Replicas that change without a config swap, as a pod watch reports them (the ReplicaSource protocol)."""

    def __init__(self) -> None:
        self.now: dict[str, tuple[Replica, ...]] = {}
        self.versions: dict[str, int] = {}

    def set(self, pool: Pool, addresses: list[str]) -> None:
        self.now[pool.key] = tuple(Replica(a) for a in addresses)
        self.versions[pool.key] = self.versions.get(pool.key, 0) + 1

    def replicas(self, pool: Pool) -> tuple[Replica, ...]:
        return self.now.get(pool.key, ())

    def version(self, pool_key: str) -> int:
        return self.versions.get(pool_key, 0)


def test_watched_replicas_are_placed_on_and_pruned_as_they_change():
    source = Watched()
    sched = Scheduler(InflightLedger(), replicas=source)
    pool = make_pool("w", [], scraped=False)  # a selector pool: the config lists no replicas
    config = make_config([pool])
    cand = Candidate(pool, pool.models[0], SchedulingConfig("round-robin"))
    for generation in range(5):
        pods = [f"pod-{generation}-{k}:8000" for k in range(3)]
        source.set(pool, pods)
        sched.retain(config)  # what a router does when its watch reports a change
        chosen = {sched.place(cand, request(i)).replica.address for i in range(6)}
        assert chosen == set(pods)
        placement = sched.place(cand, request(0))
        sched.commit(cand, placement)
        assert sched.tracked()[1] <= set(pods)
