"""The joint decision: predicted TTFT per candidate pool from live state, and the spill it drives."""

from __future__ import annotations

from dataclasses import replace

import pytest

from switchpoint.config.model import Decision, Objective, Pricing, Replica, Role
from switchpoint.router.explain import objective_evidence
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.scheduling import predict
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selection import select_static

from .test_scheduling import Clock, cand, pool, req

PREDICTIONS = [
    # (backlog, uncached, rate, running, kv, transfer tokens) -> TTFT ms
    ("idle, short prompt", (0, 256, 5000, 0, 0.0, None), 10 + 256 / 5),
    ("backlog ahead", (10_000, 256, 5000, 0, 0.0, None), 6 * 10 + 10_256 / 5 + 2048 / 5),
    ("a short backlog adds its own time twice", (500, 256, 5000, 0, 0.0, None), 10 + 756 / 5 + 500 / 5),
    ("a decoding batch stretches each step", (0, 256, 5000, 64, 0.0, None), 10 + 64 * 0.08 + 256 / 5),
    ("slower prefill rate", (0, 1000, 2000, 0, 0.0, None), 10 + 500),
    ("disaggregated: KV transfer", (0, 1000, 5000, 0, 0.0, 1000), 10 + 200 + 5 + 2),
    ("a 512-token engine: more steps, a finer granularity", (10_000, 256, 5000, 0, 0.0, None, 512),
     21 * 10 + 10_256 / 5 + 512 / 5),
]


@pytest.mark.parametrize(("what", "given", "expected_ms"), PREDICTIONS, ids=[p[0] for p in PREDICTIONS])
def test_the_prediction_follows_the_engine_model(what, given, expected_ms):
    assert predict.ttft(*given).ttft_ms == pytest.approx(expected_ms)


def test_a_saturated_kv_cache_misses_any_objective():
    p = predict.ttft(0, 10, 5000, kv_usage=0.97)
    assert p.saturated and p.misses(60.0)
    assert not predict.ttft(0, 10, 5000, kv_usage=0.5).misses(1.0)


def two_pools(clock: Clock, metrics: bool = False):
    strong = pool("strong", Replica("s:1"), metrics=metrics)
    weak = pool("weak", Replica("w:1"), Replica("w:2"), metrics=metrics)
    fleet = FleetState()
    sched = Scheduler(InflightLedger(), fleet, clock=clock)
    return strong, weak, fleet, sched


def commit_load(sched: Scheduler, c, tokens_each: int, count: int) -> None:
    for i in range(count):
        placement = sched.place(c, req(f"load {i} " + "x " * tokens_each))
        sched.commit(c, placement)


def test_an_idle_first_choice_is_kept_and_its_prediction_shown():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(ttft_ms=500))
    sel = select_static(decision, req("hello there"), sched)
    assert sel.candidate.pool.name == "strong" and not sel.spilled
    assert [p.pool for p in sel.predicted] == ["strong"]  # the others are not predicted when not needed
    assert sel.prediction is not None and sel.prediction.ttft_ms < 50
    assert "TTFT objective 500 ms: pool 'strong' predicted" in sel.note()


def test_a_backlogged_first_choice_spills_to_the_next_candidate():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    commit_load(sched, cand(strong), 2000, 8)  # ~16k tokens ahead at 5000 tok/s: > 3 s
    decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(ttft_ms=500))
    sel = select_static(decision, req("hello there"), sched)
    assert sel.candidate.pool.name == "weak" and sel.spilled
    strong_p, weak_p = sel.predicted
    assert strong_p.pool == "strong" and strong_p.prediction.ttft_ms > 3000
    assert weak_p.prediction.ttft_ms < 500
    assert any("pool 'strong': predicted TTFT" in s and "would miss the 500 ms objective" in s for s in sel.skipped)
    assert "passed over 'strong'" in sel.note()
    assert [f.candidate.pool.name for f in sel.fallbacks] == ["weak", "strong"]  # the other weak replica first
    # once the backlog drains, the first choice is back
    clock.now += 10
    assert select_static(decision, req("hello there"), sched).candidate.pool.name == "strong"


def test_without_an_objective_the_first_ready_candidate_wins_whatever_its_load():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    commit_load(sched, cand(strong), 2000, 8)
    sel = select_static(Decision("d", 1, None, (cand(strong), cand(weak))), req("hello there"), sched)
    assert sel.candidate.pool.name == "strong" and sel.predicted == () and sel.note() == ""


def test_when_every_candidate_would_miss_the_fastest_wins():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    commit_load(sched, cand(strong), 2000, 8)
    commit_load(sched, cand(weak), 2000, 6)  # two replicas: about half of it each
    decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(ttft_ms=100))
    sel = select_static(decision, req("hello there"), sched)
    assert sel.candidate.pool.name == "weak" and sel.spilled
    assert "the fastest; every candidate would miss it" in sel.note()


def test_a_quality_floor_keeps_a_much_worse_candidate_out():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    commit_load(sched, cand(strong), 2000, 8)
    tight = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(500, None, 0.05))
    sel = select_static(tight, req("hello there"), sched, qualities=(0.9, 0.7))
    assert sel.candidate.pool.name == "strong"
    assert any("more than maxQualityLoss 0.05 below" in s for s in sel.skipped)
    loose = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(500, None, 0.25))
    assert select_static(loose, req("hello there"), sched, qualities=(0.9, 0.7)).candidate.pool.name == "weak"
    # a loss of exactly maxQualityLoss is within it, though 0.9 - 0.2 is 0.7000000000000001 in floating point
    exact = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(500, None, 0.2))
    assert select_static(exact, req("hello there"), sched, qualities=(0.9, 0.7)).candidate.pool.name == "weak"


def test_a_scraped_saturated_kv_cache_spills_even_without_a_backlog():
    clock = Clock()
    strong, weak, fleet, sched = two_pools(clock, metrics=True)
    fleet.observe("s:1", clock.now, 0, 200, 0.99)
    decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(ttft_ms=2000))
    sel = select_static(decision, req("hello there"), sched)
    assert sel.candidate.pool.name == "weak" and sel.predicted[0].prediction.saturated


def test_a_disaggregated_pool_predicts_on_its_prefill_replica_with_the_transfer():
    clock = Clock()
    pd = pool("pd", Replica("p:1", Role.PREFILL), Replica("d:1", Role.DECODE), Replica("d:2", Role.DECODE))
    sched = Scheduler(InflightLedger(), FleetState(), clock=clock)
    decision = Decision("d", 1, None, (cand(pd, min_uncached_tokens=16),), objective=Objective(ttft_ms=5000))
    sel = select_static(decision, req("word " * 400), sched)
    assert sel.placement.prefill is not None
    assert sel.prediction is not None and sel.prediction.transfer_s > 0


def priced(p, price: float):
    return replace(p, pricing=Pricing(price, price))


LONG, SHORT = "word " * 1500, "hello there"  # ~300 ms and ~1 ms of prefill at 5,000 tokens/s


@pytest.mark.parametrize(("qualities", "prompt", "spills"), [
    # ~160 ms of prefill queued ahead, objective 500 ms: ~330 ms of headroom. A lead of 0.02 is 10 % of
    # maxQualityLoss 0.2: it pays for 33 ms of that headroom, not for a long prompt's 300 ms
    ((0.90, 0.88), LONG, True),
    ((0.90, 0.88), SHORT, False),  # the same lead pays for a short prompt's prefill
    ((0.90, 0.60), LONG, False),  # a lead beyond maxQualityLoss: kept up to the objective
    ((0.88, 0.90), LONG, False),  # the cheap candidate predicts better: the first choice won on cost, no trade
], ids=["small-lead-long-prompt-spills-early", "small-lead-short-prompt-stays", "large-lead-stays",
        "no-lead-no-trade"])
def test_a_small_quality_lead_spills_before_the_first_choice_is_full(qualities, prompt, spills):
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    strong, weak = priced(strong, 10.0), priced(weak, 0.5)
    commit_load(sched, cand(strong), 200, 2)  # ~160 ms of prefill ahead: well within the 500 ms objective
    decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(500, None, 0.2))
    sel = select_static(decision, req(prompt), sched, qualities=qualities)
    assert (sel.candidate.pool.name == "weak") is spills
    assert not sel.predicted[0].prediction.misses(0.5)  # every spill here is early: the first choice would meet it
    if spills:
        assert any("worth less than the" in s and "ms of prefill it would take" in s for s in sel.skipped)
        evidence = objective_evidence(sel)
        assert evidence is not None and evidence["spilled"]
        assert [c["verdict"] for c in evidence["candidates"]] == [
            "passed over: its quality lead does not pay for its prefill in the headroom left", "chosen"]


def test_the_headroom_a_lead_pays_for_shrinks_as_the_queue_grows():
    """The same request (lead 0.1 of maxQualityLoss 0.2, ~60 ms of prefill) stays on an idle first choice and
    spills once the queue ahead leaves less than twice its prefill under the objective."""
    prompt = "word " * 300
    verdicts = []
    for queued in (0, 4, 8):
        clock = Clock()
        strong, weak, _, sched = two_pools(clock)
        strong, weak = priced(strong, 10.0), priced(weak, 0.5)
        commit_load(sched, cand(strong), 200, queued)
        decision = Decision("d", 1, None, (cand(strong), cand(weak)), objective=Objective(500, None, 0.2))
        verdicts.append(select_static(decision, req(prompt), sched, qualities=(0.9, 0.8)).candidate.pool.name)
    assert verdicts == ["strong", "strong", "weak"]


def test_a_dearer_candidate_behind_is_taken_only_when_the_first_would_miss():
    clock = Clock()
    strong, weak, _, sched = two_pools(clock)
    strong, weak = priced(strong, 10.0), priced(weak, 0.5)
    commit_load(sched, cand(weak), 200, 4)
    decision = Decision("d", 1, None, (cand(weak), cand(strong)), objective=Objective(500, None, 0.2))
    assert select_static(decision, req("hello there"), sched, qualities=(0.9, 0.89)).candidate.pool.name == "weak"
