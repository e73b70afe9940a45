"""Routing metrics on hand-computed cases, and `switchpoint bench routing --quick --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from switchpoint.bench.routing_metrics import aiq, apgr, cpt, nondecreasing_hull, pgr
from tests.conftest import ROOT

# (points, hull vertices): upper concave envelope, cut at its best quality
HULLS = [
    ([(1, 0.5)], [(1, 0.5)]),
    ([(1, 0.5), (2, 0.7), (3, 0.8)], [(1, 0.5), (2, 0.7), (3, 0.8)]),  # concave already
    ([(1, 0.5), (2, 0.55), (3, 0.8)], [(1, 0.5), (3, 0.8)]),  # (2, 0.55) is under the chord (0.65)
    ([(1, 0.5), (2, 0.9), (3, 0.8)], [(1, 0.5), (2, 0.9)]),  # past the best quality: dropped
    ([(1, 0.5), (1, 0.6), (2, 0.6)], [(1, 0.6)]),  # same cost: the better one; then flat: not an increase
    ([(2, 0.7), (1, 0.5), (4, 0.9), (3, 0.75)], [(1, 0.5), (2, 0.7), (4, 0.9)]),  # unsorted input
]


@pytest.mark.parametrize("points, vertices", HULLS)
def test_nondecreasing_hull(points, vertices):
    assert nondecreasing_hull(points).tolist() == [list(v) for v in vertices]


# (points, max cost, AIQ) computed by hand: trapezoids under the hull extended flat to max cost, / max cost
AIQS = [
    ([(1, 0.5)], 1, 0.0),  # one point at the largest cost: no width
    ([(1, 0.5)], 2, 0.5 * 1 / 2),  # flat from 1 to 2
    ([(0, 0.4), (1, 0.6)], 1, (0.4 + 0.6) / 2),
    ([(1, 0.5), (2, 0.55), (3, 0.8)], 4, ((0.5 + 0.8) / 2 * 2 + 0.8 * 1) / 4),
    ([(1, 0.5), (2, 0.9), (3, 0.8)], 3, ((0.5 + 0.9) / 2 + 0.9) / 3),
]


@pytest.mark.parametrize("points, max_cost, expected", AIQS)
def test_aiq(points, max_cost, expected):
    assert aiq(points, max_cost) == pytest.approx(expected)


def test_aiq_bad_input():
    with pytest.raises(ValueError, match="below the router's cost"):
        aiq([(2, 0.5)], 1)
    with pytest.raises(ValueError, match="non-empty"):
        aiq([], 1)


def test_zero_router_is_the_hull_of_the_single_models():
    # RouterBench's random mixing: the hull of the single models; an interior model adds nothing
    singles = [(1, 0.5), (2, 0.55), (3, 0.8)]
    assert aiq(singles, 3) == pytest.approx(aiq([(1, 0.5), (3, 0.8)], 3))


# (strong shares, qualities, weak, strong, APGR)
APGRS = [
    ([0, 1], [0.6, 0.8], 0.6, 0.8, 0.5),  # random mixing
    ([0, 0.5, 1], [0.6, 0.8, 0.8], 0.6, 0.8, 0.75),  # all the gain by half the calls: area 0.75 of the box
    ([0, 0.5, 1], [0.6, 0.7, 0.8], 0.6, 0.8, 0.5),
    ([0, 0.25, 1], [0.6, 0.9, 0.8], 0.6, 0.8, (0.25 * 0.75 + 0.75 * 1.25) / 1),  # above strong: PGR > 1
    ([0.5, 0, 1], [0.8, 0.6, 0.8], 0.6, 0.8, 0.75),  # unsorted
]


@pytest.mark.parametrize("share, quality, weak, strong, expected", APGRS)
def test_apgr(share, quality, weak, strong, expected):
    assert apgr(share, quality, weak, strong) == pytest.approx(expected)


# (strong shares, qualities, weak, strong, pct, CPT)
CPTS = [
    ([0, 1], [0.6, 0.8], 0.6, 0.8, 0.5, 0.5),  # random mixing: CPT(x%) = x%
    ([0, 1], [0.6, 0.8], 0.6, 0.8, 0.95, 0.95),
    ([0, 0.2, 1], [0.6, 0.8, 0.8], 0.6, 0.8, 0.5, 0.1),  # half-way up the first segment
    ([0, 0.2, 1], [0.6, 0.8, 0.8], 0.6, 0.8, 0.95, 0.19),
    ([0, 1], [0.6, 0.7], 0.6, 0.8, 0.95, None),  # never reached
    ([0, 1], [0.8, 0.8], 0.6, 0.8, 0.5, 0.0),  # reached at once
]


@pytest.mark.parametrize("share, quality, weak, strong, pct, expected", CPTS)
def test_cpt(share, quality, weak, strong, pct, expected):
    got = cpt(share, quality, weak, strong, pct)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_cpt_first_crossing_on_a_non_monotone_curve():
    # quality 0.76 (PGR 0.8) is first reached on the segment 0.4 -> 1 (0.7 -> 0.9): at 0.4 + 0.6 * 0.06 / 0.2
    assert cpt([0, 0.2, 0.4, 1], [0.6, 0.75, 0.7, 0.9], 0.6, 0.8, 0.8) == pytest.approx(0.4 + 0.6 * 0.3)


def test_pgr():
    assert pgr(0.7, 0.6, 0.8) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pgr(0.7, 0.7, 0.7)


def test_oracle_and_singles_from_the_harness_functions():
    from switchpoint.bench.routing import outcome, sweep_cost_quality
    from switchpoint.router.selectors.dataset import load_dataset

    data = load_dataset(ROOT / "data/routing/dcrouter_train.jsonl")
    # lambda -> 0+ on the true scores is the max-score oracle of data/routing/README.md
    (_, cost, quality, _), = sweep_cost_quality(data, data.scores, data.costs, np.array([1e-9]))
    assert (cost, quality) == (pytest.approx(5.0716e-05, rel=1e-4), pytest.approx(0.7962, abs=1e-4))
    c, q = outcome(data, np.full(len(data), data.models.index("gemma-2-9b-it")))
    assert (c, q) == (pytest.approx(2.7392e-05, rel=1e-4), pytest.approx(0.5326, abs=1e-4))


def test_the_oracle_curve_stays_flat_after_its_best_and_others_close_on_the_strong_model():
    from switchpoint.bench.routing import close_two_model

    assert close_two_model([0.1, 0.2], [0.9, 0.95], 0.6, 0.8, flat_top=True) == ([0.1, 0.2, 0.0, 1.0],
                                                                                [0.9, 0.95, 0.6, 0.95])
    assert close_two_model([0.1, 0.2], [0.7, 0.75], 0.6, 0.8) == ([0.1, 0.2, 0.0, 1.0], [0.7, 0.75, 0.6, 0.8])


def test_near_duplicates_are_one_group():
    from switchpoint.bench.routing import near_duplicate_groups

    emb = np.array([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]], dtype=np.float32)
    prompts = ["a", "b", "Same  text", "same text", "c"]  # 2 and 3: equal once normalised; 0 and 1: cosine 0.999
    assert near_duplicate_groups(prompts, emb).tolist() == [0, 0, 2, 2, 4]


@pytest.mark.parametrize("prompt, family", [
    ("Write a function to find the n-th term of a geometric series.", "code"),
    ("def f(x):\n    return x", "code"),
    ("Find $x$ if $x^2 = 4$.", "maths-notation"),
    ("It takes 2 hours to groom a dog. How many hours for 3 dogs?", "word-problem"),
    ("where does the macy's day parade start", "search-query"),
    ("Who wrote the novel Watership Down?", "short-question"),
    ("x" * 800, "reading"),
])
def test_source_family(prompt, family):
    from switchpoint.bench.routing import source_family

    assert source_family(prompt) == family


def test_protocols_never_split_a_group_and_hold_each_family_out_once():
    from switchpoint.bench.routing import Corpus, protocols, row_families
    from switchpoint.router.selectors.dataset import load_dataset

    data = load_dataset(ROOT / "data/routing/routellm_mmlu.jsonl")
    fams = row_families("routellm_mmlu", data, ROOT / "data/routing")
    assert sorted(set(fams.tolist())) == ["health-business-other", "humanities", "math-and-computing",
                                          "natural-sciences", "social-sciences"]
    groups = np.arange(len(data))
    groups[1] = 0  # rows 0 and 1 one group: both take row 0's family
    c = Corpus("routellm_mmlu", data, np.zeros((len(data), 2)), groups, fams[groups], [])
    p = protocols(c)
    (split,) = p["random-split"]
    assert abs(len(split.test) / len(data) - 0.3) < 0.02 and not set(split.train) & set(split.test)
    assert {0, 1} <= set(split.train) or {0, 1} <= set(split.test)
    folds = p["leave-family-out"]
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(data)))
    for f in folds:
        assert f.name not in set(f.inner.tolist()) and len(set(f.inner.tolist())) == 4  # tuned on the other four


def small_data(tmp_path):
    """Every 40th MMLU row and every 16th dcrouter row, with the family map: the bench in seconds."""
    import shutil

    d = tmp_path / "data"
    d.mkdir()
    for name, step in (("routellm_mmlu.jsonl", 40), ("dcrouter_train.jsonl", 16)):
        lines = (ROOT / "data/routing" / name).read_text().splitlines(keepends=True)
        (d / name).write_text("".join(lines[::step]))
    shutil.copy(ROOT / "data/routing/mmlu_families.json", d)
    return d


def test_bench_routing_quick_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "switchpoint.cli", "bench", "routing", "--quick", "--json",
                          "--data", str(small_data(tmp_path)), "--plot", str(tmp_path / "curves.png")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "SWITCHPOINT_ROUTING_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["ood"]) == {"routellm_mmlu/leave-family-out", "dcrouter/leave-source-out"}
    for protocol, routers in report["ood"].items():
        two = protocol.startswith("routellm_mmlu")
        for router in ("knn", "cost-quality", "bandit", "random", "oracle", "knn (no fallback)"):
            v = routers[router]
            assert isinstance(v["aiq"], float) and len(v["aiq_ci"]) == 2
            assert ("apgr" in v and "cpt50" in v) == two, (protocol, router)
            assert len(v["folds"]) == (5 if two else 6)
        assert set(routers["knn"]["vs_blind"]) >= {"aiq"} and "fallback_rate" in routers["knn"]
        assert protocol in report["floor"] and protocol in report["targets"]
    assert report["expected_output_tokens"] == 256
    assert set(report["datasets"]) == {"routellm_mmlu", "dcrouter"}
    for name, routers in report["datasets"].items():
        for router in ("knn", "cost-quality", "bandit", "random", "random-line", "oracle"):
            assert router in routers, (name, router)
        for v in routers.values():
            assert isinstance(v["aiq"], float)
            assert v["points"] and all(len(p) == 2 for p in v["points"])
            if name == "dcrouter":
                assert "apgr" not in v
    mmlu = report["datasets"]["routellm_mmlu"]
    assert mmlu["random-line"]["apgr"] == 0.5
    assert 0.3 < mmlu["random"]["apgr"] < 0.7  # realised: noisy around 0.5
    assert mmlu["oracle"]["apgr"] > 1.0  # the oracle beats the strong model with a fraction of the calls
    assert (tmp_path / "curves.png").stat().st_size > 10_000
