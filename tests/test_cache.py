"""The semantic cache against a real Redis 8 (vector sets) and the in-process store: the same behaviour table."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis

from switchpoint.localredis import RedisServer
from switchpoint.router.cache import (
    CacheOptions,
    MemoryStore,
    Sampling,
    SemanticCache,
    cache_scope,
    conversation,
    directive,
    exact_key,
    storable,
)
from switchpoint.router.cache.policy import OUTCOME_CANCELLED, OUTCOME_ERROR, OUTCOME_SUCCESS, OUTCOME_TRUNCATED
from switchpoint.router.cache.redis_store import RedisStore
from switchpoint.router.request import ChatTurn

DIM = 64
POLICY = "team-a/chat"


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly cosine `cos` from the unit vector v."""
    o = rng.standard_normal(DIM).astype(np.float32)
    o -= (o @ v) * v
    o /= np.linalg.norm(o)
    return (cos * v + np.sqrt(1 - cos * cos) * o).astype(np.float32)


def scope(**overrides: Any):  # type: ignore[no-untyped-def]
    parts: dict[str, Any] = {"policy": POLICY, "decision": "general", "tenant": "acme", "model": "llama-3-8b",
                             "system": "You are helpful.", "tools_json": "", "sampling": Sampling(temperature=0.0)}
    parts.update(overrides)
    return cache_scope(**parts)


@pytest.fixture(params=["memory", "redis"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[..., SemanticCache]]:
    """A factory (called inside the test's event loop) of SemanticCache over the parametrised store."""
    server = None
    if request.param == "redis":
        server = RedisServer(tmp_path, persist=False)
        server.start()

    def make(**kwargs: Any) -> SemanticCache:
        store = RedisStore(server.url) if server else MemoryStore(max_entries=kwargs.pop("max_entries", 10_000))
        return SemanticCache(store, **kwargs)

    make.kind = request.param  # type: ignore[attr-defined]
    make.server = server  # type: ignore[attr-defined]
    yield make
    if server:
        server.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def put(cache: SemanticCache, sc, text: str, vec: np.ndarray | None, answer: str, ttl_s: float = 60.0,
              tokens: int = 0) -> None:
    assert cache.store(sc, text, vec, answer, sc.decision, ttl_s, 64 * 1024, tokens)
    await cache.drain()


def test_exact_and_semantic_hits_and_the_threshold(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(1)
        cache = make_cache()
        sc, v = scope(), unit(rng)
        await put(cache, sc, "How do I reverse a list in Python?", v, "Use reversed() or list[::-1].")
        exact = await cache.lookup(sc, "How do I reverse a list in Python?", v, 0.9)
        assert exact.outcome == "hit" and exact.hit is not None
        assert (exact.hit.tier, exact.hit.similarity, exact.hit.decision) == ("exact", 1.0, "general")
        assert exact.hit.content == "Use reversed() or list[::-1]." and 0 <= exact.hit.age_s < 5
        # whitespace does not split the exact tier
        assert (await cache.lookup(sc, "  How do I reverse a   list in Python? ", None, 0.9)).hit is not None
        para = await cache.lookup(sc, "python: reverse a list, how?", near(v, 0.95, rng), 0.9)
        assert para.outcome == "hit" and para.hit.tier == "semantic"  # type: ignore[union-attr]
        assert para.hit.similarity == pytest.approx(0.95, abs=0.02)  # type: ignore[union-attr]
        far = near(v, 0.8, rng)
        assert (await cache.lookup(sc, "Reverse a Python list", far, 0.9)).outcome == "miss"
        assert (await cache.lookup(sc, "Reverse a Python list", far, 0.75)).outcome == "hit"
        assert (await cache.lookup(sc, "Reverse a Python list", far, 1.01)).outcome == "miss"  # vector tier off
        stats = cache.stats()
        assert stats["hit_exact"] == 2 and stats["hit_semantic"] == 2 and stats["miss"] == 2 and stats["written"] == 1
        await cache.close()

    run(body())


def test_scopes_never_cross(make_cache: Callable[..., SemanticCache]) -> None:
    """The same text with the same vector stays invisible to every other scope."""
    async def body() -> None:
        rng = np.random.default_rng(2)
        cache = make_cache()
        text, v = "Summarise the attached contract.", unit(rng)
        base = scope()
        await put(cache, base, text, v, "the answer for acme")
        others = {
            "tenant": scope(tenant="globex"), "no tenant": scope(tenant=""),
            "policy": scope(policy="team-b/chat"), "decision": scope(decision="legal"),
            "model": scope(model="llama-3-70b"), "system prompt": scope(system="You are terse."),
            "tools": scope(tools_json='[{"type":"function","function":{"name":"search"}}]'),
            "temperature": scope(sampling=Sampling(temperature=0.7)),
            "temperature unset": scope(sampling=Sampling()), "top_p": scope(sampling=Sampling(0.0, top_p=0.5)),
            "seed": scope(sampling=Sampling(0.0, seed=7)), "stop": scope(sampling=Sampling(0.0, stop=("\n",))),
            "response_format": scope(sampling=Sampling(0.0, response_format="json_object")),
        }
        assert len({s.digest for s in others.values()} | {base.digest}) == len(others) + 1
        for name, other in others.items():
            got = await cache.lookup(other, text, v, 0.5)
            assert got.outcome == "miss", f"{name}: another scope's entry answered"
        assert (await cache.lookup(base, text, v, 0.5)).outcome == "hit"
        # formatting of JSON and the order of stop sequences do not split a scope
        tools = '[{"type": "function", "function": {"name": "search"}}]'
        assert scope(tools_json=tools).digest == others["tools"].digest
        assert scope(sampling=Sampling(0.0, stop=("a", "b"))).digest == scope(sampling=Sampling(0.0, stop=("b", "a"))
                                                                              ).digest
        await cache.close()

    run(body())


def test_exact_tier_answers_before_the_vector_tier(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(3)
        cache = make_cache()
        sc, v = scope(), unit(rng)
        await put(cache, sc, "What is the capital of France?", v, "Paris.")
        await put(cache, sc, "What's the capital of France", near(v, 0.999, rng), "It is Paris.")
        got = await cache.lookup(sc, "What's the capital of France", v, 0.5)  # nearer to the first entry's vector
        assert got.hit is not None and (got.hit.tier, got.hit.content) == ("exact", "It is Paris.")
        await cache.close()

    run(body())


def test_guard_numbers_negation_and_languages_must_match(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(4)
        cache = make_cache()
        sc, v = scope(), unit(rng)
        await put(cache, sc, "Convert 5 km to miles", v, "3.11 miles")
        await put(cache, sc, "How do I sort a dict by value in Python?", w := unit(rng), "sorted(d.items(), ...)")
        assert (await cache.lookup(sc, "convert five kilometers to miles", v, 0.5)).outcome == "hit"
        assert (await cache.lookup(sc, "Convert 8 km to miles", v, 0.5)).outcome == "miss"
        assert (await cache.lookup(sc, "How do I sort a dict by value in Rust?", w, 0.5)).outcome == "miss"
        assert (await cache.lookup(sc, "How do I not sort a dict by value in Python?", w, 0.5)).outcome == "miss"
        await cache.close()

    run(body())


def test_ttl_expiry(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(5)
        cache = make_cache()
        sc, v = scope(), unit(rng)
        await put(cache, sc, "What time zone is Tokyo in?", v, "JST, UTC+9.", ttl_s=0.4)
        await put(cache, sc, "Who wrote Hamlet?", w := unit(rng), "Shakespeare.", ttl_s=60)
        assert (await cache.lookup(sc, "Tokyo time zone?", v, 0.9)).outcome == "hit"
        await asyncio.sleep(0.6)
        assert (await cache.lookup(sc, "What time zone is Tokyo in?", v, 0.9)).outcome == "miss"
        assert (await cache.lookup(sc, "Tokyo time zone?", v, 0.9)).outcome == "miss"
        assert (await cache.lookup(sc, "Who wrote Hamlet?", w, 0.9)).outcome == "hit"
        if make_cache.kind == "redis":  # type: ignore[attr-defined]
            # the expired entry's vector is gone too, and the scope's keys expire with their newest entry
            r = redis.Redis.from_url(make_cache.server.url)  # type: ignore[attr-defined]
            vkey = next(k for k in r.scan_iter(match="sp:cache:*:v"))
            assert r.execute_command("VCARD", vkey) == 1
            assert 0 < r.pttl(vkey) <= 60_000
        await cache.close()

    run(body())


def test_max_entry_size_and_max_tokens(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(6)
        cache = make_cache()
        sc, v = scope(), unit(rng)
        assert not cache.store(sc, "Write a long essay", v, "x" * 2000, "general", 60, max_entry_bytes=1000)
        assert cache.stats()["too_large"] == 1
        await put(cache, sc, "Write a haiku about autumn", v, "Leaves fall...", tokens=300)
        assert (await cache.lookup(sc, "Write a haiku about autumn", v, 0.9, max_tokens=100)).outcome == "miss"
        assert (await cache.lookup(sc, "Write a haiku about autumn", v, 0.9, max_tokens=300)).outcome == "hit"
        assert (await cache.lookup(sc, "write an autumn haiku", v, 0.9, max_tokens=100)).outcome == "miss"
        await cache.close()

    run(body())


def test_store_refuses_entries_over_its_max_entry_bytes(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(7)
        cache = make_cache()
        cache.backend.max_entry_bytes = 100  # type: ignore[attr-defined]
        sc = scope()
        assert cache.store(sc, "big", unit(rng), "é" * 60, "general", 60, 64 * 1024)  # 120 bytes in UTF-8
        await cache.drain()
        assert cache.stats()["written"] == 0 and cache.stats()["too_large"] == 1
        assert (await cache.lookup(sc, "big", None, 0.9)).outcome == "miss"
        await cache.close()

    run(body())


def test_flush_by_policy_and_tenant(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(8)
        cache = make_cache()
        placed = [(POLICY, "acme"), (POLICY, "acme"), (POLICY, "globex"), ("team-b/chat", "acme")]
        for i, (policy, tenant) in enumerate(placed):
            await put(cache, scope(policy=policy, tenant=tenant), f"question {i}", unit(rng), f"answer {i}")
        assert await cache.flush(POLICY, tenant="acme") == 2
        assert (await cache.lookup(scope(tenant="acme"), "question 0", None, 0.9)).outcome == "miss"
        assert (await cache.lookup(scope(tenant="globex"), "question 2", None, 0.9)).outcome == "hit"
        assert await cache.flush(POLICY) == 1
        assert (await cache.lookup(scope(policy="team-b/chat"), "question 3", None, 0.9)).outcome == "hit"
        stats = await cache.backend.stats()
        assert stats["entries"] == 1 and stats["policies"] == {"team-b/chat": 1}
        await cache.close()

    run(body())


def test_multi_turn_context_is_embedded_and_keys_the_exact_tier(make_cache: Callable[..., SemanticCache]) -> None:
    first = [ChatTurn("system", "Be brief."), ChatTurn("user", "Tell me about the Eiffel Tower."),
             ChatTurn("assistant", "It is a wrought-iron tower in Paris."), ChatTurn("user", "How tall is it?")]
    second = [ChatTurn("user", "Tell me about the Burj Khalifa."),
              ChatTurn("assistant", "It is a skyscraper in Dubai."), ChatTurn("user", "How tall is it?")]
    a, b = conversation(first), conversation(second)
    assert a.embed_text.splitlines() == ["user: Tell me about the Eiffel Tower.",
                                         "assistant: It is a wrought-iron tower in Paris.", "user: How tall is it?"]
    assert "Be brief" not in a.embed_text + a.exact_text  # the system prompt is part of the scope instead
    assert exact_key(scope(), a) != exact_key(scope(), b)
    assert conversation([ChatTurn("user", "How tall is it?")]).embed_text == "How tall is it?"
    # the window keeps the tail: the question itself always, the oldest turns go first
    long = [ChatTurn("user", "x" * 900), ChatTurn("assistant", "ok"), ChatTurn("user", "and the height?")]
    tail = conversation(long, max_embed_chars=100).embed_text
    assert tail == "assistant: ok\nuser: and the height?"

    async def body() -> None:
        rng = np.random.default_rng(9)
        cache = make_cache()
        sc = scope()
        await put(cache, sc, a, unit(rng), "330 m")
        assert (await cache.lookup(sc, a, None, 0.9)).outcome == "hit"
        assert (await cache.lookup(sc, b, None, 0.9)).outcome == "miss"
        assert (await cache.lookup(sc, "How tall is it?", None, 0.9)).outcome == "miss"
        await cache.close()

    run(body())


def test_write_queue_full_drops_and_counts(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(10)
        cache = make_cache(queue_size=3)
        sc = scope()
        queued = [cache.store(sc, f"q{i}", unit(rng), f"a{i}", "general", 60, 1024) for i in range(8)]
        assert queued == [True] * 3 + [False] * 5  # the writer has not run yet: store() never waits
        assert cache.stats()["dropped_full"] == 5
        await cache.drain()
        assert cache.stats()["written"] == 3
        await cache.close()

    run(body())


def test_memory_store_evicts_least_recently_used() -> None:
    async def body() -> None:
        rng = np.random.default_rng(11)
        cache = SemanticCache(MemoryStore(max_entries=3))
        sc = scope()
        for i in range(3):
            await put(cache, sc, f"q{i}", unit(rng), f"a{i}")
        assert (await cache.lookup(sc, "q0", None, 0.9)).outcome == "hit"  # q0 is now the most recent
        await put(cache, sc, "q3", unit(rng), "a3")
        found = [(await cache.lookup(sc, f"q{i}", None, 0.9)).outcome for i in range(4)]
        assert found == ["hit", "miss", "hit", "hit"]
        assert (await cache.backend.stats())["evicted"] == 1
        await cache.close()

    run(body())


@pytest.fixture
def redis_cache_server(tmp_path: Any) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:  # append-only file: the data survives a kill and restart
        yield server


def test_redis_killed_mid_test_fails_open_fast_and_reconnects(redis_cache_server: RedisServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        rng = np.random.default_rng(12)
        cache = SemanticCache(RedisStore(redis_cache_server.url), breaker_s=0.3)
        sc, v = scope(), unit(rng)
        await put(cache, sc, "What is a monad?", v, "A monoid in the category of endofunctors.")
        assert (await cache.lookup(sc, "What is a monad?", v, 0.9)).outcome == "hit"
        redis_cache_server.stop()
        for _ in range(20):
            start = time.perf_counter()
            got = await cache.lookup(sc, "What is a monad?", v, 0.9)
            assert got.outcome == "unavailable" and time.perf_counter() - start < 0.1
        assert not cache.store(sc, "Another question", v, "answer", "general", 60, 1024)
        stats = cache.stats()
        assert stats["unavailable"] == 20 and stats["dropped_unavailable"] == 1 and stats["store_errors"] >= 1
        redis_cache_server.start()
        await asyncio.sleep(0.35)  # the breaker closes: the next lookup tries Redis again
        got = await cache.lookup(sc, "What is a monad?", v, 0.9)
        assert got.outcome == "hit" and got.hit.content.startswith("A monoid")  # type: ignore[union-attr]
        assert cache.store(sc, "Another question", v, "answer", "general", 60, 1024)
        await cache.drain()
        assert cache.stats()["written"] == 2
        await cache.close()

    with caplog.at_level("WARNING", logger="switchpoint.router.cache"):
        run(body())
    outage = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage) == 1, "an outage is logged once"
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_slow_redis_lookup_times_out_within_tens_of_ms(redis_cache_server: RedisServer) -> None:
    async def body() -> None:
        rng = np.random.default_rng(13)
        cache = SemanticCache(RedisStore(redis_cache_server.url, lookup_timeout_s=0.05), breaker_s=0.2)
        sc, v = scope(), unit(rng)
        await put(cache, sc, "Explain TCP slow start", v, "Congestion window doubles each RTT...")
        assert redis_cache_server.proc is not None
        os.kill(redis_cache_server.proc.pid, signal.SIGSTOP)
        try:
            start = time.perf_counter()
            got = await cache.lookup(sc, "Explain TCP slow start", v, 0.9)
            elapsed = time.perf_counter() - start
            assert got.outcome == "unavailable" and elapsed < 0.2, elapsed
            start = time.perf_counter()
            assert (await cache.lookup(sc, "Explain TCP slow start", v, 0.9)).outcome == "unavailable"
            assert time.perf_counter() - start < 0.005  # the breaker answers without waiting
        finally:
            os.kill(redis_cache_server.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.25)
        assert (await cache.lookup(sc, "Explain TCP slow start", v, 0.9)).outcome == "hit"
        await cache.close()

    run(body())


def test_writes_refused_under_maxmemory_are_counted_and_reads_go_on(tmp_path: Any) -> None:
    with RedisServer(tmp_path, persist=False, args=["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]) as srv:
        async def body() -> None:
            rng = np.random.default_rng(14)
            cache = SemanticCache(RedisStore(srv.url), breaker_s=5.0)
            sc, v = scope(), unit(rng)
            await put(cache, sc, "first", v, "fits")
            big = "y" * 60_000
            for i in range(200):  # about 12 MB: far past maxmemory
                cache.store(sc, f"filler {i}", unit(rng), big, "general", 60, 64 * 1024)
                if i % 20 == 19:
                    await cache.drain()
            await cache.drain()
            stats = cache.stats()
            assert stats["dropped_error"] > 0 and stats["written"] < 201
            assert cache.available, "a refused write is not an outage"
            assert (await cache.lookup(sc, "first", v, 0.9)).outcome == "hit"
            await cache.close()

        run(body())


def test_storable_table() -> None:
    opts = CacheOptions()
    allow = CacheOptions(store_truncated=True, store_refused=True, store_pii=True)
    table = [
        ((OUTCOME_SUCCESS, "Paris.", False, opts), {}, (True, "stored")),
        ((OUTCOME_SUCCESS, "   ", False, opts), {}, (False, "empty")),
        ((OUTCOME_SUCCESS, "", False, opts), {}, (False, "empty")),
        ((OUTCOME_ERROR, "upstream 500", False, allow), {}, (False, "error")),
        ((OUTCOME_CANCELLED, "partial", False, allow), {}, (False, "cancelled")),
        ((0, "text", False, allow), {}, (False, "unknown_outcome")),
        ((OUTCOME_TRUNCATED, "half an ans", False, opts), {}, (False, "truncated")),
        ((OUTCOME_TRUNCATED, "half an ans", False, allow), {}, (True, "stored")),
        ((OUTCOME_SUCCESS, "I can't help with that.", False, opts), {"refused": True}, (False, "refused")),
        ((OUTCOME_SUCCESS, "I can't help with that.", False, allow), {"refused": True}, (True, "stored")),
        ((OUTCOME_SUCCESS, "Your SSN is ...", True, opts), {}, (False, "pii")),
        ((OUTCOME_SUCCESS, "Your SSN is ...", True, allow), {}, (True, "stored")),
        ((OUTCOME_SUCCESS, "x" * 11, False, CacheOptions(max_entry_bytes=10)), {}, (False, "too_large")),
        ((OUTCOME_SUCCESS, "Paris.", False, opts), {"write_allowed": False}, (False, "bypass")),
    ]
    for args, kwargs, expected in table:
        assert storable(*args, **kwargs) == expected, (args, kwargs)


def test_directive_table() -> None:
    opts, cold = CacheOptions(), CacheOptions(max_temperature=0.0)
    table = [
        ({}, None, opts, (True, True, "")),
        ({"x-switchpoint-cache": "bypass"}, None, opts, (False, False, "bypass")),
        ({"x-switchpoint-cache": " BYPASS "}, None, opts, (False, False, "bypass")),
        ({"x-switchpoint-cache": "no-store"}, None, opts, (True, False, "no-store")),
        ({"x-switchpoint-cache": "refresh"}, None, opts, (False, True, "refresh")),
        ({"cache-control": "no-cache"}, None, opts, (False, True, "refresh")),
        ({"cache-control": "private, no-store"}, None, opts, (False, False, "bypass")),
        ({}, Sampling(n=2), opts, (False, False, "n>1")),
        ({}, Sampling(temperature=0.7), opts, (True, True, "")),
        ({}, Sampling(temperature=0.7), cold, (False, False, "temperature")),
        ({}, Sampling(), cold, (False, False, "temperature")),  # unset: the upstream default, 1.0
        ({}, Sampling(temperature=0.0), cold, (True, True, "")),
    ]
    for metadata, sampling, options, (read, write, reason) in table:
        d = directive(metadata, sampling, options)
        assert (d.read, d.write, d.reason) == (read, write, reason), (metadata, sampling)


def test_sampling_from_the_proto_message() -> None:
    from switchpoint.router.frontdoors.grpc_router import sampling_from
    from switchpoint.v1 import router_pb2

    msg = router_pb2.Sampling(temperature=0.0, stop=["\n\n"], n=1)
    s = sampling_from(msg)
    assert (s.temperature, s.top_p, s.seed, s.stop, s.n) == (0.0, None, None, ("\n\n",), 1)
    assert cache_scope(POLICY, "d", "t", "m", sampling=sampling_from(router_pb2.Sampling())).digest != \
        cache_scope(POLICY, "d", "t", "m", sampling=s).digest


def test_cache_stats_and_flush_commands(tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    with RedisServer(tmp_path, persist=False) as srv:
        async def fill() -> None:
            rng = np.random.default_rng(15)
            cache = SemanticCache(RedisStore(srv.url))
            for i, tenant in enumerate(["acme", "acme", "globex"]):
                await put(cache, scope(tenant=tenant), f"question {i}", unit(rng), f"answer {i}")
            await put(cache, scope(policy="team-b/chat"), "other", unit(rng), "x")
            await cache.close()

        run(fill())
        cli = [sys.executable, "-m", "switchpoint.cli", "cache"]
        out = subprocess.run([*cli, "stats", "--redis", srv.url, "--json"], capture_output=True, text=True, check=True)
        stats = json.loads(out.stdout)
        assert stats["entries"] == 4 and stats["policies"] == {POLICY: 3, "team-b/chat": 1} and stats["scopes"] == 3
        out = subprocess.run([*cli, "flush", "--redis", srv.url, "--policy", POLICY, "--tenant", "acme"],
                             capture_output=True, text=True, check=True)
        assert "removed 2 cache entries of team-a/chat for tenant acme" in out.stdout
        out = subprocess.run([*cli, "stats", "--redis", srv.url], capture_output=True, text=True, check=True)
        assert "2 entries" in out.stdout and "team-b/chat" in out.stdout
        bad = subprocess.run([*cli, "flush", "--redis", srv.url, "--policy", "no-namespace"], capture_output=True,
                             text=True)
        assert bad.returncode == 2 and "NAMESPACE/NAME" in bad.stderr
    down = subprocess.run([*cli, "stats", "--redis", srv.url], capture_output=True, text=True)
    assert down.returncode == 1 and "switchpoint cache stats" in down.stderr


def test_bench_cache_quick_json_layout(tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "switchpoint.cli", "bench", "cache", "--quick", "--json",
                          "--sizes", "300", "1000", "--lookups", "100", "--plot", str(tmp_path / "pr.png")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    assert set(r["entries"]) == {"300", "1000"}
    for e in r["entries"].values():
        assert 0 < e["lookup_p50_ms"] <= e["lookup_p99_ms"]
        assert e["hit_share"] > 0.3  # half the lookups are near-duplicates of stored prompts
    assert r["get_p99_ms"] > 0 and r["writes_per_s"] > 50
    piped = r["get_pipelined_p99_ms"]
    assert piped > 0 and r["lookup_target_pipelined_ms"] == round(3 * piped + 1, 3)
    assert r["threshold"] == r["threshold_rederived"]  # the default is what the stated rule picks
    assert r["quality_split"] == "heldout.jsonl" and r["heldout_pairs"] == {"paraphrase": 125, "near_miss": 131}
    assert r["pairs"] == {"paraphrase": 336, "near_miss": 337}
    lo, hi = r["hit_precision_ci95"]
    assert 0 <= lo <= r["hit_precision"] <= hi <= 1 and r["hits"]["right"] + r["hits"]["wrong"] > 0
    assert 0.5 <= r["hit_rate"] <= 1 and 0.9 <= r["hit_precision"] <= 1
    # the cosine-only baseline beside it: more hits, far more of them wrong
    assert r["cosine_only"]["hit_rate"] >= r["hit_rate"] and r["cosine_only"]["hit_precision"] < r["hit_precision"]
    by_target = r["by_target_precision"]
    assert [by_target[t]["hits"] for t in ("0.9", "0.95", "0.97", "0.98", "0.99")] == \
        sorted((by_target[t]["hits"] for t in ("0.9", "0.95", "0.97", "0.98", "0.99")), reverse=True)
    assert 0 < r["verifier_p50_ms"] <= r["verifier_p99_ms"]
    assert len(r["curve"]["development"]) == 10 and (tmp_path / "pr.png").stat().st_size > 10_000


def test_a_vector_of_another_dimension_is_a_miss_not_an_outage(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        rng = np.random.default_rng(16)
        cache = make_cache()
        sc = scope()
        await put(cache, sc, "What is a B-tree?", unit(rng), "A balanced search tree...")
        other = rng.standard_normal(DIM // 2).astype(np.float32)
        got = await cache.lookup(sc, "Explain B-trees", other / np.linalg.norm(other), 0.5)
        assert got.outcome == "miss" and cache.available
        assert cache_scope(POLICY, "d", "t", "m", encoder="minilm-static").digest != \
            cache_scope(POLICY, "d", "t", "m", encoder="minilm-l6-v2").digest
        await cache.close()

    run(body())


def test_redis_evicting_under_maxmemory_never_answers_from_a_dangling_vector(tmp_path: Any) -> None:
    with RedisServer(tmp_path, persist=False, args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]) as srv:
        async def body() -> None:
            rng = np.random.default_rng(17)
            cache = SemanticCache(RedisStore(srv.url))
            sc = scope()
            vectors = [unit(rng) for _ in range(120)]
            for i, v in enumerate(vectors):  # about 7 MB of responses: Redis evicts
                cache.store(sc, f"question {i}", v, f"{i}:" + "z" * 60_000, "general", 60, 64 * 1024)
                if i % 10 == 9:
                    await cache.drain()
            await cache.drain()
            r = redis.Redis.from_url(srv.url)
            assert int(r.info("stats")["evicted_keys"]) > 0
            outcomes = []
            for i, v in enumerate(vectors):
                got = await cache.lookup(sc, f"question {i} again", v, 0.99)
                outcomes.append(got.outcome)
                if got.hit is not None:
                    assert got.hit.content.startswith(f"{i}:")  # never another entry's answer
            assert "unavailable" not in outcomes and outcomes.count("miss") > 0
            await cache.close()

        run(body())


def test_an_empty_texts_zero_vector_uses_the_exact_tier_only(make_cache: Callable[..., SemanticCache]) -> None:
    async def body() -> None:
        cache = make_cache()
        sc, zero = scope(), np.zeros(DIM, dtype=np.float32)
        await put(cache, sc, "   ", zero, "an answer to nothing")
        assert (await cache.lookup(sc, "", zero, 0.1)).outcome == "hit"  # the same (empty) conversation
        assert (await cache.lookup(sc, "hello", zero, 0.1)).outcome == "miss"
        assert cache.available and cache.stats()["written"] == 1
        await cache.close()

    run(body())
