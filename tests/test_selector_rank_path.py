"""The single-request path of knn / cost-quality rank(): the shortcuts it takes for one request (plain-float
ordering, the one-row normalisation, per-thread search buffers, the per-candidate-set lookup) give what the
batched definitions give, bit for bit, and refuse bad input as before."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchpoint.router.selectors.base import (
    CandidateModel,
    SelectionRequest,
    SelectorError,
    candidate_costs,
    candidate_prices,
    costs_at,
    first_choice,
    order_of,
)
from switchpoint.router.selectors.costquality import CostQualitySelector
from switchpoint.router.selectors.dataset import RoutingDataset
from switchpoint.router.selectors.estimators import KnnEstimator
from switchpoint.router.selectors.guard import GuardParams, unsure
from switchpoint.router.selectors.index import KnnIndex, normalise


def lexsort_order(score: np.ndarray, cost: np.ndarray) -> list[int]:
    """The rule by definition: by score, best first; then the cheaper; then the declared position."""
    return np.lexsort((np.arange(len(score)), cost, -score)).tolist()


coarse = st.sampled_from([0.0, 0.25, 0.5, 1.0])  # few values: ties in score and in cost are common
rows = st.integers(1, 9).flatmap(lambda m: st.tuples(st.lists(coarse, min_size=m, max_size=m),
                                                     st.lists(coarse, min_size=m, max_size=m)))


@settings(max_examples=300, deadline=None)
@given(rows, st.sampled_from([0.0, 0.5, 1.0, 4.0]))
def test_order_of_is_the_lexsort_rule_including_ties(row, lam):
    quality, cost = np.array(row[0]), np.array(row[1])
    score = quality - lam * cost
    assert order_of(score.tolist(), cost.tolist()) == lexsort_order(score, cost)
    assert first_choice(quality[None, :], cost[None, :], lam)[0] == lexsort_order(score, cost)[0]


def test_normalising_one_row_is_the_batch_arithmetic_bit_for_bit():
    x = np.random.default_rng(3).normal(size=(200, 384)).astype(np.float32) * 3
    x[7] = 0.0  # a zero row stays zero
    batch = normalise(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(normalise(x[i:i + 1]), batch[i:i + 1])
    assert not normalise(x[7:8]).any()


def clustered(n: int, d: int = 48, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    return normalise((centres[rng.integers(0, 30, n)] + 1.5 * rng.normal(size=(n, d))).astype(np.float32))


@pytest.fixture(scope="module")
def index() -> KnnIndex:
    x = clustered(2600)
    n = len(x)
    rng = np.random.default_rng(2)
    scores = (rng.random((n, 3)) < np.array([0.4, 0.6, 0.8])).astype(np.float64)
    out = rng.integers(10, 400, (n, 3)).astype(np.float64)
    return KnnIndex(x, scores, out, [f"r{i}" for i in range(n)], ("a", "b", "c"), "t", "d")


def test_searches_reuse_their_buffers_without_changing_an_answer(index):
    ivf = index.ivf
    assert ivf is not None
    queries = clustered(40, seed=7)
    first = [ivf.search(q, k) for q in queries for k in (5, 80, 5)]  # a larger k grows the buffers in between
    again = [ivf.search(q, k) for q in queries for k in (5, 80, 5)]
    for (ia, sa), (ib, sb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(sa, sb)
    assert all(not np.shares_memory(i, ivf._scratch.ids) for i, _ in first)  # answers never alias the buffers


def test_threads_searching_one_index_at_once_get_the_sequential_answers(index):
    queries = clustered(60, seed=8)
    want = [index.neighbours(q[None, :], 30) for q in queries]
    got: dict[int, list] = {}
    start = threading.Barrier(3)

    def run(t: int) -> None:
        start.wait()
        got[t] = [index.neighbours(q[None, :], 30) for q in queries]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for answers in got.values():
        for (ia, sa), (ib, sb) in zip(want, answers, strict=True):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(sa, sb)


def test_costs_at_the_kept_prices_are_candidate_costs():
    cands = [CandidateModel("x", "a", 0.5, 1.5), CandidateModel("y", "b", 3.0, 15.0), CandidateModel("z", "c", 0, 0)]
    inp = np.array([10, 2000, 0])
    out = np.array([[5.0, 500.0, 7.0], [0.0, 1.0, 2.0], [3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(costs_at(candidate_prices(cands), inp, out), candidate_costs(cands, inp, out))
    np.testing.assert_array_equal(costs_at(candidate_prices(cands), inp, np.array([1.0, 2.0, 3.0])),
                                  candidate_costs(cands, inp, np.array([1.0, 2.0, 3.0])))


def dataset_of(index: KnnIndex) -> RoutingDataset:
    n = len(index.ids)
    return RoutingDataset(None, "d", index.models, index.ids, [""] * n, [""] * n, index.scores,  # type: ignore[arg-type]
                          np.zeros(index.scores.shape), np.full(n, 100), index.output_tokens.astype(np.int64))


CANDS = (CandidateModel("pa", "a", 0.2, 0.6), CandidateModel("pb", "b", 1.0, 3.0), CandidateModel("pc", "c", 5.0, 15.0))


@pytest.mark.parametrize("guard", [GuardParams(), GuardParams(min_similarity=0.2, min_margin=0.03)])
def test_rank_is_estimate_batch_and_choose_batch_on_one_request(index, guard):
    sel = CostQualitySelector(KnnEstimator(index, 12), lam=20.0, algorithm="knn",
                              calibration=(dataset_of(index), index.embeddings), guard=guard)
    queries = clustered(50, seed=11)
    ids = [f"q{i}" for i in range(len(queries))]
    est, cost = sel.estimate_batch(CANDS, queries, np.full(len(queries), 300), np.full(len(queries), 64))
    shares = sel.shares_for(CANDS) if guard.active else None
    picks, doubt = sel.choose_batch(est.quality, cost, 20.0, est.similarity, ids, shares)
    ranked = [sel.rank(list(CANDS), SelectionRequest(300, 64, q, rid)) for q, rid in zip(queries, ids, strict=True)]
    assert [r.first for r in ranked] == picks.tolist()
    assert [r.evidence.fallback for r in ranked] == doubt.tolist()
    assert not guard.active or 0 < doubt.sum() < len(queries)  # the margin rule fires on some, not all
    for r, q_row, c_row in zip(ranked, est.quality.tolist(), cost.tolist(), strict=True):
        by_index = {c.key: i for i, c in enumerate(CANDS)}
        assert [s.quality for s in r.evidence.candidates] == [q_row[by_index[k]] for k in r.keys]
        assert [s.cost for s in r.evidence.candidates] == [c_row[by_index[k]] for k in r.keys]


def test_equal_candidate_sets_share_one_lookup_and_bad_ones_are_refused_every_time(index):
    sel = CostQualitySelector(KnnEstimator(index, 5), lam=1.0, algorithm="knn")
    again = tuple(CandidateModel(c.key, c.model, c.input_per_million, c.output_per_million) for c in CANDS)
    assert sel.candidate_set(list(CANDS)) is sel.candidate_set(again)  # equal by value: the router's new tuples
    bad = [CANDS[0], CandidateModel("pa", "b", 1.0, 1.0)]
    for _ in range(2):
        with pytest.raises(SelectorError, match="candidate keys must be unique; repeated: pa"):
            sel.rank(bad, SelectionRequest(10, 10, index.embeddings[0]))
    nan = [CandidateModel("pa", "a", float("nan"), 1.0)]
    for _ in range(2):
        with pytest.raises(SelectorError, match="input price nan must be a finite number"):
            sel.rank(nan, SelectionRequest(10, 10, index.embeddings[0]))


def test_the_margin_rule_needs_the_scores():
    with pytest.raises(SelectorError, match="the margin rule needs the scores"):
        unsure(GuardParams(min_margin=0.1), None, None, 3)
    assert unsure(GuardParams(min_similarity=0.5), np.array([0.4, 0.6]), None, 2).tolist() == [True, False]
    assert unsure(GuardParams(), None, None, 2).tolist() == [False, False]
