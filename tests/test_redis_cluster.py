"""The same --redis URL for one Redis and for a Redis Cluster seed: budgets, the cache and the bandits on a
three-master cluster (real redis-server processes in cluster mode on 127.0.0.1, switchpoint/localredis.py).

The cluster refuses a script or transaction whose keys span slots (CROSSSLOT): these tests fail if a key
layout loses its hash tag. Every test spreads its keys over more than one master, so a single-slot accident
would not pass either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from redis.asyncio.cluster import RedisCluster

from switchpoint.localredis import RedisClusterServer
from switchpoint.router import redisconn
from switchpoint.router.budget.ledger import ADMITTED, REJECTED, RedisLedger, key_base
from switchpoint.router.budget.scope import BudgetInstance
from switchpoint.router.cache import SemanticCache
from switchpoint.router.cache.redis_store import RedisStore
from switchpoint.router.selectors import BanditParams, BanditSelector, RedisBanditState
from tests.test_budget_ledger import budget
from tests.test_cache import near, put, scope, unit


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer(masters=3) as cluster:
        yield cluster


def masters_holding(cluster: RedisClusterServer, pattern: str) -> int:
    """How many masters hold keys matching `pattern`."""
    import redis

    count = 0
    for url in cluster.urls:
        with redis.Redis.from_url(url) as node:
            count += bool(node.keys(pattern))
    return count


def test_a_cluster_seed_is_detected_and_a_single_server_is_not(redis_cluster, redis_url):
    assert redisconn.is_cluster(redis_cluster.url) and redisconn.is_cluster(redis_cluster.urls[2])
    assert not redisconn.is_cluster(redis_url)
    seeded = redisconn.async_client(redis_cluster.urls[1], timeout_s=1, max_connections=4)
    single = redisconn.async_client(redis_url, timeout_s=1, max_connections=4)
    assert isinstance(seeded, RedisCluster) and not isinstance(single, RedisCluster)
    asyncio.run(redisconn.close(seeded))
    asyncio.run(redisconn.close(single))


def test_an_unreachable_url_is_taken_for_one_server_and_asked_again_later():
    from switchpoint.localredis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    assert not redisconn.is_cluster(url, timeout_s=0.2)
    assert url not in redisconn._kinds  # not remembered: the next client asks again


def test_budgets_reserve_settle_and_peek_across_namespaces_on_the_cluster(redis_cluster):
    cap = budget(limit=100, name="cap")
    # every budget of a namespace shares one slot, whatever its scope; other namespaces land elsewhere
    spread = [BudgetInstance(replace(budget(limit=1000, name="spend").budget, namespace=f"team-{i}"))
              for i in range(12)]
    each = BudgetInstance(replace(budget(limit=50, name="per-tenant").budget, scope_type="EachTenant"), "acme")

    async def body() -> None:
        ledger = RedisLedger(redis_cluster.url)
        first = await ledger.reserve("r1", 60_000, [(cap, 60), (each, 30)], False)
        assert first.status == ADMITTED and [s.reserved for s in first.states] == [60, 30]
        second = await ledger.reserve("r2", 60_000, [(cap, 60), (each, 10)], False)
        assert second.status == REJECTED and second.culprit == 0
        settled = await ledger.settle("r1", 60_000, [(cap, 45), (each, 45)])
        assert [(s.spent, s.reserved) for s in settled.states] == [(45, 0), (45, 0)]
        for i, b in enumerate(spread):
            assert (await ledger.reserve(f"s{i}", 60_000, [(b, 7)], False)).status == ADMITTED
        peek = await ledger.peek([cap, *(b for b in spread), each])
        assert [s.reserved for s in peek.states] == [0, *[7] * 12, 0]
        assert peek.states[0].spent == 45 and peek.states[-1].spent == 45
        await ledger.close()

    asyncio.run(body())
    assert key_base(spread[0]).startswith("sp:budget:{team-0}:")
    assert masters_holding(redis_cluster, "sp:budget:{team-*") >= 2


def test_the_semantic_cache_works_on_the_cluster(redis_cluster):
    async def body() -> None:
        rng = np.random.default_rng(4)
        store = RedisStore(redis_cluster.url)
        await store.connect()  # as the router does at start
        cache = SemanticCache(store)
        tenants = [f"tenant-{i}" for i in range(8)]
        vectors = {t: unit(rng) for t in tenants}
        for t in tenants:
            await put(cache, scope(tenant=t), "How do I reverse a list in Python?", vectors[t], f"answer for {t}")
        for t in tenants:
            exact = await cache.lookup(scope(tenant=t), "How do I reverse a list in Python?", vectors[t], 0.9)
            assert exact.hit is not None and exact.hit.content == f"answer for {t}" and exact.hit.tier == "exact"
            para = await cache.lookup(scope(tenant=t), "python: reverse a list, how?", near(vectors[t], 0.95, rng),
                                      0.9)
            assert para.hit is not None and para.hit.tier == "semantic" and para.hit.content == f"answer for {t}"
        stats = await cache.backend.stats()
        assert stats["entries"] == 8 and stats["scopes"] == 8 and stats["vectors"] == 8
        assert await cache.flush("team-a/chat", tenant="tenant-0") == 1
        assert (await cache.lookup(scope(tenant="tenant-0"), "How do I reverse a list in Python?", None,
                                   0.9)).outcome == "miss"
        await cache.close()

    asyncio.run(body())
    assert masters_holding(redis_cluster, "sp:cache:*") >= 2


def test_bandit_counts_are_shared_through_the_cluster(redis_cluster):
    async def body() -> None:
        states = [RedisBanditState(redis_cluster.url, f"pol/dec-{i % 4}") for i in range(8)]  # 4 decisions, 2 each
        selectors = [BanditSelector(BanditParams(context_bits=0, seed=i), s) for i, s in enumerate(states)]
        for sel in selectors:
            for _ in range(5):
                sel.feedback("-", "large", 1.0)
        for s in states:
            assert await s.sync()
        for s in states:
            assert await s.sync()
            assert s.counts("-", ["large"]).sum() == pytest.approx(10)  # its own 5 and its twin's 5
        for s in states:
            await s.close()

    asyncio.run(body())
    assert masters_holding(redis_cluster, "sp:bandit:*") >= 2
