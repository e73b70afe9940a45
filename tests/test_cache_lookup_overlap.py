"""The Redis lookup does the request's side of the verifier while Redis searches (resp `then`), and answers as
before: the same outcomes as the in-process store on a table, a dead Redis named in the error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from switchpoint.localredis import RedisServer, free_port
from switchpoint.router import resp
from switchpoint.router.cache import MemoryStore, SemanticCache, cache_scope, conversation, exact_key, guard
from switchpoint.router.cache.redis_store import RedisStore
from switchpoint.router.cache.store import Probe
from switchpoint.router.request import ChatTurn

DIM = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), persist=False) as srv:
        yield srv


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def toward(v: np.ndarray, cos: float, seed: int) -> np.ndarray:
    o = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    o -= (o @ v) * v
    o /= np.linalg.norm(o)
    return (cos * v + np.sqrt(1 - cos * cos) * o).astype(np.float32)


def test_then_runs_while_the_command_is_at_the_server(server: RedisServer) -> None:
    """BLPOP blocks at the server; `then` sees it blocked there (CLIENT LIST) and unblocks it, so the reply is
    what `then` pushed: the work ran after the write and before the reply."""
    sync = redis.Redis.from_url(server.url)
    seen: list[bool] = []

    def then() -> None:
        seen.append(any(c.get("cmd") == "blpop" for c in sync.client_list()))
        sync.rpush("sp:test:then", "pushed")

    async def body() -> object:
        pipe = resp.for_url(server.url, 2.0)
        assert pipe is not None
        try:
            return await pipe.call("BLPOP", "sp:test:then", 2, then=then)
        finally:
            await pipe.close()

    assert asyncio.run(body()) == [b"sp:test:then", b"pushed"]
    assert seen == [True]


def test_then_runs_once_when_the_script_is_loaded_again(server: RedisServer) -> None:
    """After SCRIPT FLUSH, EVALSHA answers NOSCRIPT and the script is sent again by EVAL: `then` still runs once."""
    calls: list[int] = []

    async def body() -> list[object]:
        pipe = resp.for_url(server.url, 2.0)
        assert pipe is not None
        script = resp.PipelinedScript(pipe, "return ARGV[1]")
        try:
            first = await script(keys=[], args=["a"], then=lambda: calls.append(1))
            await pipe.call("SCRIPT", "FLUSH")
            second = await script(keys=[], args=["b"], then=lambda: calls.append(2))
            return [first, second]
        finally:
            await pipe.close()

    assert asyncio.run(body()) == [b"a", b"b"]
    assert calls == [1, 2]


# (stored text, its vector seed) and lookups: (text, vector: seed of the stored one and cosine, or None for a
# vector of its own), each with the stored text expected to answer (None: a miss).
STORED = [("How do I reverse a list in Python?", 1), ("What is the capital of Canada?", 2),
          ("Convert 45 degrees to radians", 3), ("How long should I boil an egg?", 4)]
TABLE = [
    ("How do I reverse a list in Python?", (1, 1.0), "How do I reverse a list in Python?"),  # exact tier
    ("how can I reverse a Python list", (1, 0.93), "How do I reverse a list in Python?"),  # paraphrase
    ("What is the capital of Brazil?", (2, 0.95), None),  # a swapped content word: the verifier says no
    ("Convert 45 radians to degrees", (3, 0.97), None),  # swapped roles
    ("Convert 90 degrees to radians", (3, 0.97), None),  # another number: the guard says no
    ("How long do I boil an egg for?", (4, 0.5), None),  # below the threshold
    ("Something never stored at all", None, None),
]


def test_redis_lookups_answer_as_the_in_process_store(server: RedisServer) -> None:
    sc = cache_scope("team/overlap", "general", "acme", "m")

    async def answers(store: Any) -> list[str | None]:
        cache = SemanticCache(store, lookup_timeout_s=1.0)
        await cache.flush("team/overlap")
        for text, seed in STORED:
            assert cache.store(sc, text, unit(seed), f"answer: {text}", "general", 60, 4096)
        await cache.drain()
        out = []
        for i, (text, vec, _) in enumerate(TABLE):
            v = unit(100 + i) if vec is None else toward(unit(vec[0]), vec[1], 200 + i)
            got = await cache.lookup(sc, text, v, 0.8)
            assert got.outcome in ("hit", "miss")
            out.append(None if got.hit is None else got.hit.content.removeprefix("answer: "))
        await cache.close()
        return out

    expected = [want for _, _, want in TABLE]
    assert asyncio.run(answers(MemoryStore())) == expected
    assert asyncio.run(answers(RedisStore(server.url))) == expected


def test_the_requests_guard_is_computed_while_redis_searches(server: RedisServer) -> None:
    """A lookup whose search finds nothing at the threshold still leaves the request's guard memoised: it was
    computed during the round trip, not after it (where only candidate hits pay for it)."""
    sc = cache_scope("team/overlap2", "general", "acme", "m")
    text = "How many grams of flour are in 3 cups, roughly?"

    async def body() -> str:
        cache = SemanticCache(RedisStore(server.url), lookup_timeout_s=1.0)
        assert cache.store(sc, "What is the speed of light?", unit(7), "c", "general", 60, 4096)
        await cache.drain()
        guard.salient.cache_clear()
        guard.canonical_tokens.cache_clear()
        got = await cache.lookup(sc, text, toward(unit(7), 0.1, 8), 0.8)
        await cache.flush("team/overlap2")
        await cache.close()
        return got.outcome

    assert asyncio.run(body()) == "miss"
    assert guard.salient.cache_info().currsize == 1 and guard.canonical_tokens.cache_info().currsize == 1
    assert guard.salient(text) == "n:3 unit:cup unit:gram" and guard.salient.cache_info().hits == 1


def test_a_dead_redis_is_named_in_the_error_and_the_cache_answers_unavailable() -> None:
    port = free_port()
    sc = cache_scope("team/dead", "general", "acme", "m")
    conv = conversation([ChatTurn("user", "What is a monad?")])

    async def body() -> tuple[str, str]:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", lookup_timeout_s=0.2)
        with pytest.raises(RedisConnectionError) as err:
            await store.lookup(Probe(sc, exact_key(sc, conv), unit(1), 0.8, conv.embed_text))
        cache = SemanticCache(store, lookup_timeout_s=0.5)
        got = await cache.lookup(sc, conv, unit(1), 0.8)
        await cache.close()
        return str(err.value), got.outcome

    message, outcome = asyncio.run(body())
    assert f"127.0.0.1:{port}" in message and outcome == "unavailable"
