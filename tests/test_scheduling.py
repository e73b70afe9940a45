"""Replica scheduling: scorers, profiles (including the baselines), prefill/decode pairs, readiness, the ledger."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from switchpoint.config.model import Candidate, Decision, MetricsConfig, Pool, Pricing, Replica, Role, SchedulingConfig
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.refusals import InvalidRequest, Unavailable
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.pickers import PickContext, max_score
from switchpoint.router.scheduling.profiles import profile_for
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.scheduling.scorers import SCORERS, ScoringInput
from switchpoint.router.selection import select_static


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(name: str, *replicas: Replica, context: int = 8192, metrics: bool = False) -> Pool:
    return Pool("default", name, (f"{name}-model",), "gpu", context, Pricing(), replicas,
                metrics=MetricsConfig() if metrics else None)


def cand(p: Pool, profile: str = "switchpoint", **kw) -> Candidate:
    return Candidate(p, p.models[0], SchedulingConfig(profile=profile, **kw))


def req(text: str, system: str = "") -> RouteInput:
    turns = ((ChatTurn("system", system),) if system else ()) + (ChatTurn("user", text),)
    return RouteInput(request_id=str(random.random()), model="auto", messages=turns)


def entry(rid: str, replica: str, prefill: str = "", started: float = 0.0) -> InflightEntry:
    return InflightEntry(rid, "p", "d", "pool", "m", replica, prefill, started=started)


def columns(n: int, **kw) -> ScoringInput:
    """n candidates: nothing cached, idle, 100 uncached prompt tokens each, unless given (as lists)."""
    base = dict(prefix_blocks=[0] * n, uncached_tokens=[100] * n, backlog_tokens=[0.0] * n, inflight=[0] * n,
                waiting=[0.0] * n, running=[0.0] * n, kv_usage=[0.0] * n)
    cols = {k: np.array(v, dtype=float) for k, v in {**base, **kw}.items()}
    return ScoringInput(5000.0, 10, cols.pop("prefix_blocks"), cols.pop("uncached_tokens"), cols.__getitem__)


SCORER_CASES = [
    ("queue", dict(waiting=[0, 5, 10]), [1.0, 0.5, 0.0]),
    ("queue", dict(waiting=[3, 3]), [1.0, 1.0]),
    ("kv-cache", dict(kv_usage=[0.25, 0.9]), [0.75, 0.1]),
    ("kv-cache", dict(kv_usage=[-0.5, 1.5]), [1.0, 0.0]),
    ("least-request", dict(inflight=[4, 0, 2]), [0.0, 1.0, 0.5]),
    ("inflight-tokens", dict(backlog_tokens=[0, 1000]), [1.0, 0.0]),
    ("decode-interference", dict(uncached_tokens=[100, 100, 100], running=[2, 0, 0], inflight=[0, 1, 0]),
     [0.0, 0.5, 1.0]),
]


@pytest.mark.parametrize(("name", "given", "expected"), SCORER_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SCORER_CASES)])
def test_scorers_follow_gie_normalisation(name, given, expected):
    n = len(next(iter(given.values())))
    scores = SCORERS[name](columns(n, **given))
    assert scores.tolist() == pytest.approx(expected)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_prefix_and_latency_scorers():
    x = columns(3, prefix_blocks=[8, 0, 0], uncached_tokens=[100, 900, 900], backlog_tokens=[0, 0, 4000])
    assert SCORERS["prefix-cache"](x).tolist() == [0.8, 0.0, 0.0]
    latency = SCORERS["predicted-latency"](x).tolist()
    assert latency[0] == 1.0 and latency[0] > latency[1] > latency[2]
    assert all(0 < s <= 1 for s in latency)


def test_columns_are_gathered_once_and_only_by_scorers_that_read_them():
    asked = []
    x = columns(2)
    given = x.gather
    x.gather = lambda name: asked.append(name) or given(name)
    SCORERS["predicted-latency"](x)
    SCORERS["kv-cache"](x)
    assert asked == ["backlog_tokens", "kv_usage"]
    SCORERS["least-request"](x)
    SCORERS["decode-interference"](x)
    SCORERS["inflight-tokens"](x)
    assert asked == ["backlog_tokens", "kv_usage", "inflight", "running"]


def test_policy_weights_override_the_profile():
    assert profile_for(SchedulingConfig("gie-default")).weights == (("queue", 2.0), ("kv-cache", 2.0),
                                                                   ("prefix-cache", 3.0))
    tuned = profile_for(SchedulingConfig("gie-default", weights=(("queue", 0.0), ("prefix-cache", 5.0))))
    assert tuned.weights == (("kv-cache", 2.0), ("prefix-cache", 5.0))


@pytest.mark.parametrize("profile", ["least-request", "round-robin", "switchpoint"])
def test_equal_requests_spread_evenly(profile):
    ledger = InflightLedger()
    sched = Scheduler(ledger, clock=Clock())
    c = cand(pool("a", Replica("h:1"), Replica("h:2"), Replica("h:3")), profile)
    for i in range(30):
        r = req(f"question number {i}")
        placement = sched.place(c, r)
        ledger.admit(entry(str(i), placement.replica.address, started=1e9))
        sched.commit(c, placement)
    assert Counter(ledger.loads().values()) == Counter({10: 3})


def test_switchpoint_sends_a_long_prompt_away_from_a_replica_still_prefilling():
    clock = Clock()
    sched = Scheduler(InflightLedger(), clock=clock)
    c = cand(pool("a", Replica("h:1"), Replica("h:2")))
    long_doc = "lorem ipsum dolor sit amet " * 2000  # ~13k tokens
    first = sched.place(c, req(long_doc + "A"))
    sched.commit(c, first)
    second = sched.place(c, req(long_doc.replace("lorem", "other") + "B"))
    assert second.replica != first.replica
    clock.now += 10  # the first replica's backlog has drained
    assert sched.backlog.tokens(first.replica.address, clock.now, 5000) == 0


def test_switchpoint_returns_a_shared_prefix_to_the_replica_that_has_it():
    clock = Clock()
    sched = Scheduler(InflightLedger(), clock=clock)
    c = cand(pool("a", Replica("h:1"), Replica("h:2"), Replica("h:3")))
    system = "You are a meticulous assistant for the ACME support team. " * 120
    first = sched.place(c, req("first question", system=system))
    sched.commit(c, first)
    clock.now += 5
    again = sched.place(c, req("a different question", system=system))
    assert again.replica == first.replica and again.uncached_tokens < 50


def test_gie_default_herds_on_stale_metrics_where_switchpoint_does_not():
    """Within one scrape interval GIE's scores do not change, so a burst lands on one replica."""
    clock = Clock()
    fleet = FleetState()
    p = pool("a", Replica("h:1"), Replica("h:2"), Replica("h:3"), metrics=True)
    for i, (waiting, kv) in enumerate([(0, 0.1), (1, 0.3), (2, 0.5)]):
        fleet.observe(f"h:{i + 1}", clock.now, waiting, 4, kv)
    picks = {}
    for profile in ("gie-default", "switchpoint"):
        ledger = InflightLedger()
        sched = Scheduler(ledger, fleet, clock=clock)
        c = cand(p, profile)
        chosen = []
        for i in range(6):
            placement = sched.place(c, req(f"burst request {i} " + "x" * 2000))
            ledger.admit(entry(f"{profile}{i}", placement.replica.address, started=1e9))
            sched.commit(c, placement)
            chosen.append(placement.replica.address)
        picks[profile] = Counter(chosen)
    assert picks["gie-default"] == Counter({"h:1": 6})
    assert len(picks["switchpoint"]) == 3


def test_disaggregate_only_when_enough_of_the_prompt_is_uncached():
    clock = Clock()
    sched = Scheduler(InflightLedger(), clock=clock)
    p = pool("pd", Replica("p:1", Role.PREFILL), Replica("d:1", Role.DECODE), Replica("d:2", Role.DECODE))
    c = cand(p, min_uncached_tokens=256)
    long_prompt = "the quick brown fox jumps over the lazy dog " * 200
    first = sched.place(c, req(long_prompt))
    assert first.replica.role is Role.DECODE and first.prefill.address == "p:1"
    sched.commit(c, first)
    clock.now += 5
    short = sched.place(c, req("hi"))
    assert short.prefill is None  # a short prompt is prefilled where it decodes
    repeat = sched.place(c, req(long_prompt))
    assert repeat.replica == first.replica and repeat.prefill is None  # now cached on the decode replica


def test_a_pool_of_only_prefill_replicas_cannot_serve():
    sched = Scheduler(InflightLedger())
    p = pool("pre", Replica("p:1", Role.PREFILL))
    assert sched.place(cand(p), req("hi")) is None
    with pytest.raises(Unavailable) as caught:
        select_static(Decision("d", 1, None, (cand(p),)), req("hi"), sched)
    assert "pool(s) 'pre'" in caught.value.message


def test_failing_replicas_leave_rotation_and_come_back():
    clock = Clock()
    fleet = FleetState()
    p = pool("a", Replica("h:1"), Replica("h:2"), metrics=True)
    sched = Scheduler(InflightLedger(), fleet, clock=clock)
    for _ in range(3):
        fleet.failed("h:1")
    assert {sched.place(cand(p), req(f"q{i}")).replica.address for i in range(10)} == {"h:2"}
    fleet.observe("h:1", clock.now, 0, 0, 0.0)
    assert "h:1" in {sched.place(cand(p, "round-robin"), req(f"q{i}")).replica.address for i in range(4)}
    assert fleet.fresh(p, Replica("h:1"), clock.now + 3) is None  # stale after 2 s


def test_selection_skips_pools_too_small_and_orders_fallbacks():
    sched = Scheduler(InflightLedger())
    small = pool("small", Replica("s:1"), context=10)
    big = pool("big", Replica("b:1"), Replica("b:2"), context=100_000)
    other = pool("other", Replica("o:1"), context=100_000)
    decision = Decision("d", 1, None, (cand(small), cand(big), cand(other)))
    sel = select_static(decision, req("hello " * 20), sched)
    assert sel.candidate.pool.name == "big"
    assert [f.candidate.pool.name for f in sel.fallbacks] == ["big", "other"]
    assert "context 10 <" in sel.skipped[0]


def test_a_request_larger_than_every_pool_is_invalid():
    sched = Scheduler(InflightLedger())
    decision = Decision("d", 1, None, (cand(pool("small", Replica("s:1"), context=10)),))
    with pytest.raises(InvalidRequest) as caught:
        select_static(decision, req("hello " * 20), sched)
    assert "has no pool that large" in caught.value.message


def test_ledger_settles_counts_prefill_and_expires():
    ledger = InflightLedger(ttl_s=10)
    ledger.admit(entry("a", "d:1", "p:1", started=100.0))
    ledger.admit(entry("b", "d:1", started=105.0))
    assert ledger.loads() == {"d:1": 2, "p:1": 1}
    assert ledger.settle("a").replica == "d:1"
    assert ledger.settle("a") is None
    assert ledger.expire(now=116.0) == 1
    assert ledger.loads() == {} and len(ledger) == 0


def test_ledger_is_bounded():
    ledger = InflightLedger(ttl_s=1e9, max_entries=3)
    for i in range(5):
        ledger.admit(entry(str(i), "h:1", started=float(i)))
    assert len(ledger) == 3 and "0" not in ledger and ledger.load("h:1") == 3
    assert ledger.expired_total == 2


def pick_context(seed: int) -> PickContext:
    return PickContext(random.Random(seed), np.random.default_rng(seed), lambda: 0)


def test_max_score_in_a_small_pool_orders_as_a_sort_with_random_ties():
    """What the scheduler always did: sort by score, ties by one draw from its rng per candidate, in order."""
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    for seed in range(20):
        twin = random.Random(seed)
        expected = sorted(range(len(scores)), key=lambda i: (-scores[i], twin.random()))[:5]
        assert max_score(scores, len(scores), 5, pick_context(seed)).tolist() == expected


def test_max_score_in_a_large_pool_ranks_the_best_and_draws_the_tied_uniformly():
    scores = np.zeros(1000)
    scores[[3, 500, 999]] = [2.0, 3.0, 2.0]
    scores[100:200] = 1.0  # 100 replicas tie for the last two places
    ctx = pick_context(1)
    seen: Counter[int] = Counter()
    for _ in range(3000):
        order = max_score(scores, 1000, 5, ctx).tolist()
        assert order[0] == 500 and set(order[1:3]) == {3, 999} and len(set(order)) == 5
        assert all(100 <= i < 200 for i in order[3:])
        seen.update(order[3:])
    assert len(seen) == 100 and max(seen.values()) < 3 * min(seen.values())  # ~60 each
    firsts = Counter(tuple(max_score(scores, 1000, 5, ctx).tolist()[1:3]) for _ in range(2000))
    assert set(firsts) == {(3, 999), (999, 3)} and abs(firsts[(3, 999)] - 1000) < 150


def test_max_score_without_scores_treats_all_alike():
    order = max_score(None, 100, 5, pick_context(3))
    assert len(set(order.tolist())) == 5 and all(0 <= i < 100 for i in order)
