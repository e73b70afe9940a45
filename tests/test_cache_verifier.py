"""The pair verifier: shipped weights match training, precision is a knob, and the knob reaches the store."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from switchpoint.router.cache import CacheOptions, MemoryStore, SemanticCache, cache_scope
from switchpoint.router.cache import verifier_model as shipped
from switchpoint.router.cache.store import VERIFIER
from switchpoint.router.cache.verifier import DEFAULT_TARGET_PRECISION, FEATURES, check_target


def test_the_shipped_weights_are_what_training_produces() -> None:
    from switchpoint.router.cache import training

    trained: dict[str, object] = {}
    exec(compile(training.train(), "verifier_model", "exec"), trained)
    assert trained["FEATURES"] == shipped.FEATURES == FEATURES
    for name in ("WEIGHTS", "MEAN", "SCALE"):
        assert np.allclose(trained[name], getattr(shipped, name), atol=2e-2), name  # type: ignore[arg-type]
    assert np.allclose(trained["CALIBRATION"], shipped.CALIBRATION, atol=2e-2)  # type: ignore[arg-type]


def test_a_higher_target_precision_never_lowers_the_threshold() -> None:
    targets = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0]
    thresholds = [VERIFIER.threshold(t) for t in targets]
    assert thresholds == sorted(thresholds)
    assert VERIFIER.threshold(0.5) < VERIFIER.threshold(DEFAULT_TARGET_PRECISION) <= 1.0
    rows = VERIFIER.calibration
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(rows))


@pytest.mark.parametrize(("query", "stored", "accepted"), [
    ("How do I reverse a string in Python?", "How do I reverse a string in Python", True),
    ("what's the python way to reverse a string", "How do I reverse a string in Python?", True),
    ("How long is paternity leave in Canada?", "How long is maternity leave in Canada?", False),
    ("How do I switch from annual to monthly billing?", "How do I switch from monthly to annual billing?", False),
    ("Who was the first man to land on the Moon?", "When did the first man land on the Moon?", False),
])
def test_verifier_at_the_default_target(query: str, stored: str, accepted: bool) -> None:
    assert VERIFIER.accepts(query, stored, 0.9, DEFAULT_TARGET_PRECISION) is accepted


def test_provably_different_questions_are_refused_at_any_target() -> None:
    assert not VERIFIER.accepts("from annual to monthly", "from monthly to annual", 1.0, 0.5)


@pytest.mark.parametrize("bad", [0.49, 1.01, -1.0])
def test_a_target_outside_the_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"target precision .* is outside \[0.5, 1.0\]"):
        check_target(bad)
    with pytest.raises(ValueError, match="target precision"):
        CacheOptions(target_precision=bad)
    assert CacheOptions(target_precision=0.99).target_precision == 0.99


def test_the_knob_reaches_the_store_through_lookup() -> None:
    """A reworded question the verifier scores between two operating points: a hit at the default target
    precision, a miss at 0.99 (the entry and the vectors are the same)."""
    stored = "How can I check if a key exists in a Python dictionary?"
    query = "python: test whether a dict has a certain key"
    score = VERIFIER.score(query, stored, 0.9)
    assert VERIFIER.threshold(DEFAULT_TARGET_PRECISION) <= score < VERIFIER.threshold(0.99)

    async def body() -> list[str]:
        cache = SemanticCache(MemoryStore(), lookup_timeout_s=5.0)  # a loaded machine must not make it "unavailable"
        sc = cache_scope("team-a/chat", "general", "acme", "m")
        v = np.ones(8, dtype=np.float32) / np.sqrt(8)
        assert cache.store(sc, stored, v, "key in d", "general", 60, 1024)
        await cache.drain()
        outcomes = [(await cache.lookup(sc, query, v, 0.5, target_precision=t)).outcome
                    for t in (None, DEFAULT_TARGET_PRECISION, 0.99)]
        await cache.close()
        return outcomes

    assert asyncio.run(body()) == ["hit", "hit", "miss"]


@pytest.mark.parametrize("words", [5, 800], ids=["short: on the loop", "long: in a worker thread"])
def test_short_and_long_texts_are_verified_alike(words: int) -> None:
    """A long conversation (over store.INLINE_CHARS) goes through the worker thread and answers as a short one."""
    from switchpoint.router.cache.store import INLINE_CHARS

    context = " ".join(f"word{i}" for i in range(words))
    stored, query = f"{context} How do I reverse a string in Python?", f"{context} how do i reverse a string in python"
    assert (len(query) > INLINE_CHARS) is (words > 100)

    async def body() -> list[str]:
        cache = SemanticCache(MemoryStore(), lookup_timeout_s=5.0)
        sc = cache_scope("team-a/chat", "general", "acme", "m")
        v = np.ones(8, dtype=np.float32) / np.sqrt(8)
        assert cache.store(sc, stored, v, "s[::-1]", "general", 60, 1024)
        await cache.drain()
        out = [(await cache.lookup(sc, q, v, 0.5)).outcome for q in (query, query.replace("string", "list"))]
        await cache.close()
        return out

    assert asyncio.run(body()) == ["hit", "miss"]
