"""The kNN index's inverted file: what it returns, what it costs in recall, and that rank() sees the same answer
as the benchmark's batches."""

from __future__ import annotations

import numpy as np
import pytest

from switchpoint.router.selectors.base import SelectorError
from switchpoint.router.selectors.index import RECALL_TARGET, InvertedFile, KnnIndex, default_lists, normalise


def clustered(n: int, d: int = 96, centres: int = 40, spread: float = 1.6, seed: int = 1) -> np.ndarray:
    """Unit rows around fixed random centres: neighbourhoods a kNN router would see (prompts of a few kinds);
    the seed draws the rows, not the centres."""
    c = np.random.default_rng(0).normal(size=(centres, d))
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d))
    return normalise(x.astype(np.float32))


def index_of(x: np.ndarray, lists: int | None = None) -> KnnIndex:
    n = len(x)
    return KnnIndex(x, np.linspace(0, 1, n)[:, None], np.ones((n, 1)), [f"r{i}" for i in range(n)], ("m",), "t", "d",
                    lists)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(3200)


@pytest.fixture(scope="module")
def ivf_index(data: np.ndarray) -> KnnIndex:
    return index_of(data)


@pytest.fixture(scope="module")
def exact_index(data: np.ndarray) -> KnnIndex:
    return index_of(data, lists=0)


def test_the_size_rule_scores_every_row_of_a_small_index_and_lists_a_large_one(ivf_index, exact_index):
    assert default_lists(2048) == 0 and default_lists(3200) == 14
    assert ivf_index.ivf is not None and len(ivf_index.ivf.spans) <= 14
    assert exact_index.ivf is None and exact_index.recall == 1.0
    assert index_of(clustered(500)).ivf is None


def test_the_search_returns_exact_cosines_best_first_and_k_of_them(ivf_index, data):
    q = clustered(20, seed=7)
    idx, sims = ivf_index.neighbours(q, 25)
    assert idx.shape == sims.shape == (20, 25)
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", q, data[idx]), atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-7)
    assert all(len(set(r.tolist())) == 25 for r in idx)


def test_measured_recall_holds_on_prompts_it_was_not_calibrated_on(ivf_index, exact_index):
    assert ivf_index.recall >= RECALL_TARGET and 1 < ivf_index.ivf.probes < len(ivf_index.ivf.spans)
    q = clustered(200, seed=11)  # new prompts from the same kinds
    for k in (10, 40):
        found, _ = ivf_index.neighbours(q, k)
        truth, _ = exact_index.neighbours(q, k)
        recall = np.mean([np.isin(t, f).mean() for t, f in zip(truth, found, strict=True)])
        assert recall >= 0.9, (k, recall)


def test_leave_one_out_never_returns_the_row_itself(ivf_index, data):
    rows = np.array([0, 5, 17, 3199])
    idx, sims = ivf_index.neighbours(data[rows], 5, rows)
    assert not np.any(idx == rows[:, None])
    assert np.all(np.isfinite(sims))
    kept, _ = ivf_index.neighbours(data[rows], 1)
    assert kept[:, 0].tolist() == rows.tolist()  # without exclusion a row is its own nearest


def test_one_query_at_a_time_is_the_batch_row_by_row(ivf_index):
    q = clustered(6, seed=3)
    batch = ivf_index.neighbours(q, 8)
    for r in range(len(q)):
        one = ivf_index.neighbours(q[r:r + 1], 8)
        assert one[0].tolist() == batch[0][r:r + 1].tolist()
        np.testing.assert_array_equal(one[1], batch[1][r:r + 1])


def test_lists_too_small_for_k_are_read_on_until_k_rows_are_found():
    x = clustered(2100, seed=5)
    index = index_of(x, lists=300)  # ~7 rows per list
    assert index.ivf is not None
    index.ivf.probes = 1
    idx, sims = index.neighbours(x[:3], 50, np.arange(3))
    assert idx.shape == (3, 50) and np.all(np.isfinite(sims))


def test_the_inverted_file_is_deterministic():
    x = clustered(2100, seed=9)
    a, b = InvertedFile.build(x, 8), InvertedFile.build(x, 8)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert (a.probes, a.recall, a.spans) == (b.probes, b.recall, b.spans)


@pytest.mark.parametrize("lists", [-1, 2.5, True])
def test_bad_lists_are_refused(lists):
    with pytest.raises(SelectorError, match="lists must be an integer >= 0"):
        index_of(clustered(10), lists=lists)
