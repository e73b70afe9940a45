"""The joint decision end to end: the spill through the router core, its evidence, and `bench joint`."""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import replace
from pathlib import Path

import pytest

from switchpoint.bench import joint
from switchpoint.bench.joint_args import add_joint_arguments
from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.router.classifiers.bank import ModelBank, Models
from switchpoint.router.core import Snapshot
from switchpoint.router.core.offline import assemble
from switchpoint.router.core.snapshot import Preparer
from switchpoint.router.explain import explanation, render
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.pipeline import placement_attributes
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selecting import SelectorBank, Selectors


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _config(objective: dict | None):
    pools = [{"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": name},
              "spec": {"models": [{"name": f"{name}-model"}], "replicas": {"static": [{"address": f"{name}:1"}]}}}
             for name in ("large", "small")]
    default: dict = {"pools": [{"pool": "large"}, {"pool": "small"}]}
    if objective is not None:
        default["objective"] = objective
    policy = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": "auto"},
              "spec": {"aliases": ["auto"], "default": default}}
    return compile_manifests([Manifest("t.yaml", m) for m in (*pools, policy)])


def _core(objective: dict | None, backlog_tokens: int):
    """A core whose 'large' replica owes `backlog_tokens` of prefill (routed there a moment ago)."""
    config = _config(objective)
    clock = Clock()
    scheduler = Scheduler(InflightLedger(), FleetState(), clock=clock)
    large = config.policies["default/auto"].default.candidates[0]
    scheduler.backlog.add("large:1", backlog_tokens, clock.now, large.scheduling.prefill_tokens_per_second)
    return assemble(Snapshot(config, Models(), Selectors()), scheduler)


def _req(rid: str = "r1") -> RouteInput:
    return RouteInput(request_id=rid, model="auto", messages=(ChatTurn("user", "Refactor this parser, please."),))


def _route(core, req: RouteInput):
    return asyncio.run(core.route(req))


def test_a_loaded_first_choice_is_passed_over_and_the_reason_says_why():
    routed = _route(_core({"ttftMs": 800}, backlog_tokens=20_000), _req())
    assert routed.pool == "small"
    assert "TTFT objective 800 ms: pool 'small' predicted" in routed.reason
    assert "passed over 'large'" in routed.reason


def test_the_same_load_without_an_objective_stays_on_the_first_choice():
    routed = _route(_core(None, backlog_tokens=20_000), _req())
    assert routed.pool == "large" and "objective" not in routed.reason


def test_an_idle_first_choice_keeps_the_request():
    routed = _route(_core({"ttftMs": 800}, backlog_tokens=0), _req())
    assert routed.pool == "large" and "passed over" not in routed.reason


def test_switchpoint_route_and_the_trace_show_each_candidates_prediction():
    core = _core({"ttftMs": 800}, backlog_tokens=20_000)
    result = asyncio.run(core.pipeline.route(core.snapshot, _req()))
    info = explanation(result)
    verdicts = {c["pool"]: c for c in info["objective"]["candidates"]}
    assert verdicts["large"]["verdict"] == "passed over: would miss" and verdicts["large"]["queue_ms"] > 4000
    assert verdicts["small"]["verdict"] == "chosen" and verdicts["small"]["predicted_ttft_ms"] < 100
    assert info["objective"]["spilled"] and info["objective"]["ttft_ms"] == 800
    text = render(info)
    assert "objective  ttft_ms 800   (spilled)" in text and "predicted TTFT" in text
    attributes = placement_attributes(result.selection)
    assert attributes["switchpoint.placement.spilled"] is True
    assert attributes["switchpoint.placement.predicted_ttft_ms.large"] > 4000
    assert "would miss the 800 ms objective" in attributes["switchpoint.placement.passed_over"]


# -- bench joint ----------------------------------------------------------------------------------------------------

def _scenario(*flags: str) -> joint.Scenario:
    parser = argparse.ArgumentParser()
    add_joint_arguments(parser)
    return joint.scenario_from(parser.parse_args(list(flags)))


@pytest.mark.parametrize("flags", [("--burst-share", "0.5", "--burst-factor", "3"), ("--burst-share", "1"),
                                   ("--burst-factor", "0.5"), ("--rate", "0"), ("--strong-replicas", "0"),
                                   ("--k", "0")])
def test_a_scenario_that_cannot_be_run_is_refused(flags):
    with pytest.raises(ValueError):
        _scenario(*flags).check()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> joint.Data:
    return joint.load_data(tmp_path_factory.mktemp("joint"), train_rows=1500)  # a smaller kNN index: seconds


def test_the_selectors_neighbours_are_a_flag_that_reaches_the_policy(data):
    config = joint.strategy_config("joint", _scenario("--k", "25"), data.train_file, {"strong": 1000, "weak": 2000})
    decision = config.aliases["auto"].default
    assert decision.selection.algorithm == "knn"
    assert decision.selection.k == 25


def test_arrivals_burst_around_the_mean_rate_and_repeat_per_seed(data):
    scenario = _scenario("--rate", "20", "--seconds", "200")
    arrivals = joint.arrivals(scenario, data, random.Random(3))
    assert arrivals == joint.arrivals(scenario, data, random.Random(3))
    assert len(arrivals) / scenario.duration_s == pytest.approx(20, rel=0.1)
    in_burst = sum(1 for a in arrivals if a.at % scenario.period_s < scenario.burst_share * scenario.period_s)
    assert in_burst / len(arrivals) == pytest.approx(scenario.burst_share * scenario.burst_factor, abs=0.06)
    assert {int(a.row) for a in arrivals} <= set(data.test.tolist())  # test rows only: the selector never saw them


def test_the_selector_knows_only_the_train_rows(data):
    train = {line for line in data.train_file.read_text(encoding="utf-8").split("\n") if line}
    assert len(train) == 1500 and len(data.test) > 3000
    test_prompts = {data.rows.prompts[i] for i in data.test.tolist()}
    assert not any(f'"prompt": {p!r}' in line for line in list(train)[:200] for p in list(test_prompts)[:50])


def test_a_short_run_places_every_request_and_spills_nothing_when_idle(data):
    scenario = _scenario("--rate", "2", "--seconds", "10")
    preparer = Preparer(ModelBank(), SelectorBank())
    snapshots = joint.prepare_snapshots(preparer, scenario, data, joint.measured_prefill_rates(scenario, data))
    from switchpoint.router.signals.neural import SignalInference

    inference = SignalInference(1)
    try:
        outcomes = joint.run_rate(scenario, snapshots, data, (5,), inference)
    finally:
        inference.close()
    for name, outcome in outcomes.items():
        assert outcome.total == len(outcome.quality) == len(outcome.ttft) > 5, name
    assert outcomes["joint"].spilled == 0 and outcomes["joint"].summary()["slo_attainment"] == 1.0
    assert outcomes["joint"].calibration and outcomes["semantic_only"].calibration == []
    # idle pools: the joint decision is the semantic one
    assert outcomes["joint"].quality == outcomes["semantic_only"].quality


def _rates(**by_rate: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]) -> dict:
    """rate -> ((quality, slo) of semantic_only, load_only, joint)."""
    return {r.lstrip("r"): {name: {"quality": q, "slo_attainment": s}
                            for name, (q, s) in zip(joint.STRATEGIES, values, strict=True)}
            for r, values in by_rate.items()}


def test_the_verdict_checks_the_default_and_the_range_from_the_first_miss_to_twice_it():
    good = ((0.80, 0.80), (0.70, 0.90), (0.795, 0.95))
    served = ((0.80, 0.99), (0.70, 1.0), (0.80, 0.99))
    v = joint.verdict(_rates(r10=served, r20=good, r30=good, r40=good, r50=good), "30")
    assert v["met"] and v["first_miss_rate"] == "20" and v["checked_rates"] == ["20", "30", "40"]
    too_lossy = ((0.80, 0.80), (0.70, 0.90), (0.78, 0.95))
    assert not joint.verdict(_rates(r10=served, r20=good, r40=too_lossy), "20")["met"]
    behind_load_only = ((0.80, 0.80), (0.70, 0.97), (0.80, 0.95))
    assert not joint.verdict(_rates(r10=served, r20=behind_load_only), "20")["met"]


def test_the_verdict_says_when_ten_points_of_slo_over_semantic_only_cannot_be_had():
    barely_missing = ((0.80, 0.93), (0.70, 1.0), (0.80, 1.0))  # semantic_only misses 7 %: at most +7 points
    v = joint.verdict(_rates(r20=barely_missing), "20")
    assert not v["met"] and "unreachable: semantic_only at 93.0%" in v["lines"][0]
    good = ((0.80, 0.80), (0.70, 0.90), (0.795, 0.95))
    assert "unreachable" not in joint.verdict(_rates(r20=good), "20")["lines"][0]


def test_the_flags_have_one_source_of_defaults():
    scenario = _scenario()
    assert (scenario.rate, scenario.ttft_ms, scenario.strong_replicas, scenario.weak_replicas) == (18.0, 1000, 2, 4)
    assert Path(joint.DATASET).is_file()


def test_the_prefill_rate_is_measured_under_load_below_the_step_formula(data):
    """Each pool's prefillTokensPerSecond comes from a load test of one replica, counted as the router counts
    uncached tokens: decodes take their token of each step's budget, so a busy replica computes less than the
    formula's full chunks; the same measurement is reproducible and scales with the engine's speed."""
    strong, weak = _scenario().pools()
    for pool in (strong, weak):
        measured = joint.measured_prefill_rate(pool, data, prompts=200)
        assert measured == joint.measured_prefill_rate(pool, data, prompts=200)
        assert 0.8 * joint.nominal_prefill_rate(pool) < measured < joint.nominal_prefill_rate(pool)
    e = strong.engine
    faster = replace(strong, engine=replace(e, iteration_base_ms=e.iteration_base_ms / 2,
                                            prefill_ms_per_token=e.prefill_ms_per_token / 2))
    ratio = joint.measured_prefill_rate(faster, data, prompts=200) / joint.measured_prefill_rate(strong, data, 200)
    assert ratio == pytest.approx(2.0, rel=0.05)
