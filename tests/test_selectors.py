"""Selection algorithms (switchpoint.router.selectors) on small hand-made indexes, bad input, and the bandit's
state shared through a real Redis."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from switchpoint.router.selectors import (
    BanditParams,
    BanditSelector,
    CandidateModel,
    CostQualityParams,
    CostQualitySelector,
    DatasetError,
    KnnParams,
    RedisBanditState,
    SelectionRequest,
    SelectorError,
    StaticSelector,
    WeightedParams,
    WeightedSelector,
    cost_quality_selector,
    knn_selector,
    load_dataset,
)
from switchpoint.router.selectors.base import decision_costs, first_choice, order_of
from switchpoint.router.selectors.costquality import lambda_for_share
from switchpoint.router.selectors.estimators import KnnEstimator, LinearEstimator, MeanEstimator
from switchpoint.router.selectors.index import KnnIndex, cache_path, embed_dataset

CHEAP = CandidateModel("cheap-pool", "small", 0.1, 0.1)
DEAR = CandidateModel("dear-pool", "large", 10.0, 30.0)


def e(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


class AxisEncoder:
    """A tiny deterministic encoder for tests: 'math' prompts point along x, everything else along y."""

    name = "axis-test"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([e(1, 0.1, 0) if "math" in t else e(0.1, 1, 0) for t in texts])


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(i: int, prompt: str, small: float, large: float, models: tuple[str, ...] = ("small", "large")) -> dict:
    scores = {"small": small, "large": large}
    return {"id": f"r{i}", "prompt": prompt, "task": "t", "scores": {m: scores[m] for m in models},
            "costs": {m: {"small": 1e-6, "large": 1e-4}[m] for m in models}, "input_tokens": 10,
            "output_tokens": {m: 5 for m in models}}


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Math prompts: only the large model is right. Chat prompts: both are."""
    rows = [row(i, f"math problem {i}", 0.0, 1.0) for i in range(6)]
    rows += [row(10 + i, f"chat hello {i}", 1.0, 1.0) for i in range(6)]
    return write_rows(tmp_path / "labelled.jsonl", rows)


def req(emb: np.ndarray | None = None, rid: str = "", inp: int = 100, out: int = 50) -> SelectionRequest:
    return SelectionRequest(inp, out, emb, rid)


# -- static and weighted ---------------------------------------------------------------------------------
def test_static_keeps_the_declared_order_and_reports_costs():
    r = StaticSelector().rank([DEAR, CHEAP], req())
    assert r.order == (0, 1) and r.keys == ("dear-pool", "cheap-pool")
    assert r.evidence.candidates[0].cost == pytest.approx((100 * 10 + 50 * 30) / 1e6)


def test_weighted_is_deterministic_per_request_id_and_follows_the_weights():
    sel = WeightedSelector(WeightedParams((3.0, 1.0, 0.0)))
    cands = [CHEAP, DEAR, CandidateModel("never", "x")]
    assert sel.rank(cands, req(rid="abc")).order == sel.rank(cands, req(rid="abc")).order
    firsts = Counter(sel.rank(cands, req(rid=f"req-{i}")).first for i in range(4000))
    assert firsts[2] == 0  # weight 0: never first ...
    assert all(sel.rank(cands, req(rid=f"q{i}")).order[-1] == 2 for i in range(50))  # ... kept last
    assert firsts[0] / 4000 == pytest.approx(0.75, abs=0.03)


def test_weighted_without_request_id_draws_at_random_and_says_so():
    r = WeightedSelector(WeightedParams((1.0, 1.0))).rank([CHEAP, DEAR], req())
    assert "random draw" in r.evidence.notes[0]


@pytest.mark.parametrize("weights, message", [
    ((), "one weight per candidate"), ((1.0, -1.0), r"weights\[1\]"), ((0.0, 0.0), "above 0"),
    ((1.0, math.nan), "finite"),
])
def test_weighted_rejects_bad_weights(weights, message):
    with pytest.raises(SelectorError, match=message):
        WeightedParams(weights)


def test_weighted_needs_one_weight_per_candidate():
    with pytest.raises(SelectorError, match="2 weight"):
        WeightedSelector(WeightedParams((1.0, 1.0))).rank([CHEAP, DEAR, CandidateModel("c", "c")], req(rid="x"))


def test_candidates_must_be_unique_and_priced_sanely():
    with pytest.raises(SelectorError, match="unique"):
        StaticSelector().rank([CHEAP, CHEAP], req())
    with pytest.raises(SelectorError, match="no candidates"):
        StaticSelector().rank([], req())
    with pytest.raises(SelectorError, match="input price"):
        StaticSelector().rank([CandidateModel("a", "a", -1.0, 0.0)], req())


# -- the cost-quality decision -----------------------------------------------------------------------------
def full_order(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """order_of on every row: the order rank() gives one request, for n requests."""
    score = quality - lam * cost
    return np.array([order_of(s, c) for s, c in zip(score.tolist(), cost.tolist(), strict=True)],
                    dtype=np.int64).reshape(score.shape)


def test_the_cost_quality_order_trades_quality_against_cost():
    q = np.array([[0.5, 0.9]])
    c = np.array([[0.0, 0.001]])
    assert full_order(q, c, 0.0)[0].tolist() == [1, 0]  # quality only
    assert full_order(q, c, 399.0)[0].tolist() == [1, 0]  # 0.9 - 0.399 > 0.5
    assert full_order(q, c, 401.0)[0].tolist() == [0, 1]  # 0.9 - 0.401 < 0.5
    assert full_order(q, c, 400.0)[0].tolist() == [0, 1]  # a tie goes to the cheaper


def test_first_choice_agrees_with_the_full_order_including_ties():
    rng = np.random.default_rng(3)
    q = rng.integers(0, 3, (500, 4)) / 2.0  # many exact ties
    c = rng.integers(0, 3, (500, 4)) * 1e-4
    for lam in (0.0, 1e3, 5e3, 1e5):
        assert (first_choice(q, c, lam) == full_order(q, c, lam)[:, 0]).all()


def test_relative_cost_basis_weighs_price_ratios_not_prompt_length():
    q = np.array([[0.5, 0.9], [0.5, 0.9]])
    usd = np.array([[1e-6, 1e-4], [1e-4, 1e-2]])  # the same two models, a short and a 100x longer prompt
    assert first_choice(q, decision_costs(usd, "absolute"), 2000.0).tolist() == [1, 0]  # the long one goes cheap
    rel = decision_costs(usd, "relative")
    assert rel == pytest.approx(np.array([[0.01, 1.0], [0.01, 1.0]]))
    assert first_choice(q, rel, 0.3).tolist() == [1, 1] and first_choice(q, rel, 0.5).tolist() == [0, 0]
    with pytest.raises(SelectorError, match="cost basis"):
        decision_costs(usd, "per-token")
    with pytest.raises(SelectorError, match="cost_basis"):
        KnnParams(dataset="x.jsonl", cost_basis="per-token")  # type: ignore[arg-type]
    with pytest.raises(SelectorError, match="cost_basis"):
        BanditParams(cost_basis="per-token")


@pytest.mark.parametrize("lam", [-1.0, math.inf, math.nan, True, "1"])
def test_lambda_out_of_range_is_a_clear_error(lam, labelled):
    with pytest.raises(SelectorError, match="lambda must be a finite number >= 0"):
        KnnParams(dataset=str(labelled), lam=lam)
    with pytest.raises(SelectorError, match="lambda"):
        BanditParams(lam=lam)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be an integer >= 1"), ({"k": 2.5}, "k must be"),
    ({"lam": 1.0, "target_quality_share": 0.9}, "not both"), ({"target_quality_share": 1.5}, r"\(0, 1\]"),
    ({"target_quality_share": 0.0}, r"\(0, 1\]"), ({"temperature": -0.1}, "temperature"),
    ({"prior_quality": 2.0}, "prior_quality"), ({"dataset": ""}, "needs a dataset"),
])
def test_knn_params_validation(kwargs, message, labelled):
    params = {"dataset": str(labelled), **kwargs}
    with pytest.raises(SelectorError, match=message):
        KnnParams(**params)


def test_cost_quality_params_validation():
    with pytest.raises(SelectorError, match="needs a dataset"):
        CostQualityParams(lam=1.0)
    with pytest.raises(SelectorError, match="estimator"):
        CostQualityParams(lam=1.0, dataset="x", estimator="magic")  # type: ignore[arg-type]


# -- knn -------------------------------------------------------------------------------------------------
def test_knn_sends_math_to_the_large_model_and_chat_to_the_small_one(labelled, tmp_path):
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=100.0), AxisEncoder(), tmp_path / "cache")
    cands = [DEAR, CHEAP]
    math_r = sel.rank(cands, req(e(1, 0.05, 0)))
    chat_r = sel.rank(cands, req(e(0.05, 1, 0)))
    assert math_r.keys[0] == "dear-pool" and chat_r.keys[0] == "cheap-pool"
    ev = math_r.evidence
    assert ev.algorithm == "knn" and ev.lam == 100.0
    assert len(ev.neighbours) == 3 and all(n.id.startswith("r") and int(n.id[1:]) < 6 for n in ev.neighbours)
    by_key = {c.key: c for c in ev.candidates}
    assert by_key["dear-pool"].quality == 1.0 and by_key["cheap-pool"].quality == 0.0
    assert by_key["dear-pool"].cost == pytest.approx((100 * 10 + 5 * 30) / 1e6)  # output tokens from neighbours
    attrs = ev.attributes()
    assert attrs["switchpoint.selection.algorithm"] == "knn" and "switchpoint.selection.neighbours" in attrs


def test_knn_at_a_high_lambda_picks_the_cheaper_even_for_math(labelled, tmp_path):
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=1e6), AxisEncoder(), tmp_path)
    assert sel.rank([DEAR, CHEAP], req(e(1, 0, 0))).keys[0] == "cheap-pool"


def test_knn_index_embeddings_are_cached_by_dataset_digest_and_encoder(labelled, tmp_path):
    enc = AxisEncoder()
    data = load_dataset(labelled)
    first = embed_dataset(data, enc, tmp_path)
    again = embed_dataset(data, enc, tmp_path)
    assert enc.calls == 1 and np.array_equal(first, again)
    path = cache_path(data, enc.name, tmp_path)
    assert path.is_file() and data.digest[:16] in path.name and enc.name in path.name
    labelled.write_text(labelled.read_text() + json.dumps(row(99, "math new", 0.0, 1.0)) + "\n")
    embed_dataset(load_dataset(labelled), enc, tmp_path)  # another digest: re-encoded
    assert enc.calls == 2


def test_a_candidate_model_the_dataset_does_not_know(labelled, tmp_path):
    stranger = CandidateModel("new-pool", "brand-new-model", 0.1, 0.1)
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=0.0), AxisEncoder(), tmp_path)
    with pytest.raises(SelectorError, match=r"brand-new-model not in the kNN dataset .*it has: small, large"):
        sel.rank([DEAR, stranger], req(e(1, 0, 0)))
    with pytest.raises(SelectorError, match="brand-new-model"):
        sel.prepare([DEAR, stranger])  # at policy load, before any request
    prior = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=0.0, unknown_model="prior", prior_quality=0.3),
                         AxisEncoder(), tmp_path)
    r = prior.rank([stranger, DEAR], req(e(1, 0, 0)))
    assert r.keys[0] == "dear-pool"
    unknown = next(c for c in r.evidence.candidates if c.key == "new-pool")
    assert unknown.quality == 0.3 and unknown.known is False
    assert any("brand-new-model" in n for n in r.evidence.notes)
    assert r.evidence.attributes()["switchpoint.selection.unknown.new-pool"] is True


def test_knn_without_an_embedding_uses_the_dataset_means_and_says_so(labelled, tmp_path):
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=0.0), AxisEncoder(), tmp_path)
    r = sel.rank([CHEAP, DEAR], req(None))
    assert r.keys[0] == "dear-pool" and "no request embedding" in r.evidence.notes[0]


def test_knn_embedding_of_another_encoder_is_refused(labelled, tmp_path):
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=0.0), AxisEncoder(), tmp_path)
    with pytest.raises(SelectorError, match=r"2 dimensions.*'axis-test' \(3\)"):
        sel.rank([CHEAP, DEAR], req(e(1, 0)))


def test_knn_weights_and_shrinkage():
    emb = np.stack([e(1, 0), e(0.9, 0.1), e(0, 1)])
    index = KnnIndex(emb, np.array([[1.0], [0.0], [0.0]]), np.ones((3, 1)), ["a", "b", "c"], ("m",), "t", "d")
    q = e(1, 0)[None, :]
    assert KnnEstimator(index, k=2).estimate(q, ["m"]).quality[0, 0] == pytest.approx(0.5)  # uniform
    sharp = KnnEstimator(index, k=2, temperature=0.001).estimate(q, ["m"]).quality[0, 0]
    assert sharp > 0.99  # the exact match dominates
    shrunk = KnnEstimator(index, k=2, prior_strength=2.0).estimate(q, ["m"]).quality[0, 0]
    assert shrunk == pytest.approx((2 * 0.5 + 2 * (1 / 3)) / 4)
    loo = KnnEstimator(index, k=1).estimate(q, ["m"], exclude=np.array([0])).quality[0, 0]
    assert loo == 0.0  # leave-one-out: row 0 itself is not its own neighbour


def test_an_empty_index_is_refused():
    with pytest.raises(SelectorError, match="empty"):
        KnnIndex(np.zeros((0, 3), np.float32), np.zeros((0, 1)), np.zeros((0, 1)), [], ("m",), "t", "d")


def test_target_quality_share_becomes_a_lambda_on_the_training_data(labelled, tmp_path):
    # on the data: always-large scores 1.0, routing math->large and chat->small also 1.0 at a fraction of the cost
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, target_quality_share=1.0), AxisEncoder(), tmp_path)
    lam = sel.prepare([DEAR, CHEAP])
    assert lam > 0
    # requests the size of the dataset's (lambda prices quality per USD: a much longer prompt costs more)
    assert sel.rank([DEAR, CHEAP], req(e(0, 1, 0), inp=10, out=5)).keys[0] == "cheap-pool"
    math_r = sel.rank([DEAR, CHEAP], req(e(1, 0, 0), inp=10, out=5))
    assert math_r.keys[0] == "dear-pool" and math_r.evidence.lam == lam
    assert "target quality share" in math_r.evidence.notes[-1]


def test_lambda_for_share_hand_computed():
    # two rows; model 0 free and right on row 0 only, model 1 costs 1 and is right on both
    q = np.array([[1.0, 1.0], [0.0, 1.0]])
    c = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert lambda_for_share(q, c, q, 1.0) > 0  # route row 0 to model 0 for free, keep row 1 on model 1
    lam = lambda_for_share(q, c, q, 1.0)
    assert first_choice(q, c, lam).tolist() == [0, 1]
    assert lambda_for_share(q, c, q, 0.5) >= 1.0  # 50% of the best: all on model 0 (lambda past the 1.0 gap)


def test_cost_quality_with_linear_heads_and_with_means(labelled, tmp_path):
    lin = cost_quality_selector(CostQualityParams(lam=100.0, dataset=str(labelled)), AxisEncoder(), tmp_path)
    assert lin.rank([DEAR, CHEAP], req(e(1, 0.1, 0))).keys[0] == "dear-pool"
    assert lin.rank([DEAR, CHEAP], req(e(0.1, 1, 0))).keys[0] == "cheap-pool"
    mean = cost_quality_selector(CostQualityParams(lam=0.0, dataset=str(labelled), estimator="mean"), None)
    r = mean.rank([CHEAP, DEAR], req(e(0.1, 1, 0)))
    assert r.keys[0] == "dear-pool"  # mean quality 1.0 vs 0.5, cost ignored at lambda 0
    assert r.evidence.candidates[0].quality == 1.0


def test_linear_heads_learn_a_separable_rule():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    from switchpoint.router.selectors.dataset import RoutingDataset

    y = (x[:, 0] > 0).astype(float)
    data = RoutingDataset(Path("mem"), "d", ("m",), [str(i) for i in range(400)], [""] * 400, [""] * 400,
                          y[:, None], np.zeros((400, 1)), np.zeros(400, dtype=np.int64), np.ones((400, 1), np.int64))
    heads = LinearEstimator.fit(data, x, l2=1e-4, steps=300)
    p = heads.estimate(x, ["m"]).quality[:, 0]
    assert ((p > 0.5) == (y > 0.5)).mean() > 0.95


def test_mean_estimator_unknown_model_error_names_it(labelled):
    with pytest.raises(SelectorError, match="ghost"):
        MeanEstimator(load_dataset(labelled)).estimate(None, ["small", "ghost"])


# -- datasets ------------------------------------------------------------------------------------------
def test_a_row_missing_a_model_is_an_error_with_its_line_or_skipped_and_counted(tmp_path):
    rows = [row(0, "a", 1, 0), row(1, "b", 1, 1, models=("small",)), row(2, "c", 0, 1)]
    path = write_rows(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError, match=r"d.jsonl:2: 'scores' lacks model\(s\) large"):
        load_dataset(path)
    data = load_dataset(path, on_missing="skip")
    assert len(data) == 2 and data.skipped == 1 and data.skipped_lines == [2]
    assert data.models == ("small", "large")


@pytest.mark.parametrize("text, message", [
    ("{not json\n", r":1: not JSON"),
    ('{"id": "x"}\n', r":1: missing field\(s\) prompt"),
    ("", "no usable row"),
])
def test_malformed_datasets(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_scores_outside_0_1_and_missing_files(tmp_path):
    bad = row(0, "a", 1.5, 0)
    with pytest.raises(DatasetError, match="score of small outside"):
        load_dataset(write_rows(tmp_path / "s.jsonl", [bad]))
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(SelectorError, match="no such dataset"):
        knn_selector(KnnParams(dataset=str(tmp_path / "nope.jsonl")), AxisEncoder(), tmp_path)


def test_prices_are_recovered_from_the_stored_costs():
    data = load_dataset(Path(__file__).resolve().parents[1] / "data/routing/dcrouter_train.jsonl")
    prices = data.prices()
    assert prices["gemma-2-9b-it"] == (0.1, 0.1) and prices["llama3-chatqa-1.5-70b"] == (0.9, 0.9)
    assert data.price_error() < 1e-11


# -- bandit ------------------------------------------------------------------------------------------------
def test_bandit_params_validation():
    for kwargs, message in [({"exploration": -1}, "exploration"), ({"exploration": 11}, "exploration"),
                            ({"context_bits": 13}, "context_bits"), ({"prior": (0.0, 1.0)}, "prior")]:
        with pytest.raises(SelectorError, match=message):
            BanditParams(**kwargs)
    with pytest.raises(SelectorError, match="quality must be in"):
        BanditSelector(BanditParams()).feedback("-", "m", 1.5)


def test_bandit_contexts_are_stable_across_instances():
    a = BanditSelector(BanditParams(context_bits=6, seed=1))
    b = BanditSelector(BanditParams(context_bits=6, seed=2))
    v = e(0.3, -0.2, 0.9, 0.1)
    assert a.context(v) == b.context(v) and a.context(v).startswith("6:")
    assert a.context(None) == "-" and BanditSelector(BanditParams(context_bits=0)).context(v) == "-"


def _play(sel: BanditSelector, rounds: int, truth: dict[str, float], rng: np.random.Generator) -> list[str]:
    picks = []
    for _ in range(rounds):
        r = sel.rank([CHEAP, DEAR], req(None, inp=10, out=10))
        model = [CHEAP, DEAR][r.first].model
        picks.append(model)
        sel.feedback(r.evidence.context or "-", model, float(rng.random() < truth[model]))
    return picks


def test_bandit_converges_to_the_better_arm_in_process():
    sel = BanditSelector(BanditParams(lam=0.0, context_bits=0, seed=5))
    picks = _play(sel, 400, {"small": 0.3, "large": 0.8}, np.random.default_rng(1))
    assert picks[-100:].count("large") >= 90
    greedy = BanditSelector(BanditParams(lam=0.0, exploration=0.0, context_bits=0), sel.state)
    r = greedy.rank([CHEAP, DEAR], req(None))
    assert r.keys[0] == "dear-pool" and not r.evidence.explored


def test_bandit_reward_includes_cost():
    # large is better by 0.1 but costs 0.0004 USD more per request here; lambda 1000 makes that 0.4 points
    sel = BanditSelector(BanditParams(lam=1000.0, context_bits=0, seed=5))
    picks = _play(sel, 400, {"small": 0.7, "large": 0.8}, np.random.default_rng(2))
    assert picks[-100:].count("small") >= 90


def test_bandit_state_is_shared_through_redis(redis_url):
    async def scenario() -> None:
        a_state, b_state = RedisBanditState(redis_url, "pol/dec"), RedisBanditState(redis_url, "pol/dec")
        a = BanditSelector(BanditParams(context_bits=0, seed=1), a_state)
        b = BanditSelector(BanditParams(context_bits=0, seed=2), b_state)
        rng = np.random.default_rng(3)
        truth = {"small": 0.2, "large": 0.9}
        for _ in range(15):  # both replicas learn, each from its own traffic, and sync
            _play(a, 10, truth, rng)
            _play(b, 10, truth, rng)
            assert await a_state.sync() and await b_state.sync()
        await a_state.sync()  # a sees b's last flush
        total_a = a_state.counts("-", ["small", "large"]).sum()
        total_b = b_state.counts("-", ["small", "large"]).sum()
        assert total_a == pytest.approx(300) and total_b == pytest.approx(300)  # every feedback, counted once
        fresh = RedisBanditState(redis_url, "pol/dec")  # a third replica starting now knows everything
        assert await fresh.sync() and fresh.counts("-", ["small", "large"]).sum() == pytest.approx(300)
        greedy = BanditSelector(BanditParams(exploration=0.0, context_bits=0), fresh)
        assert greedy.rank([CHEAP, DEAR], req(None)).keys[0] == "dear-pool"
        for s in (a_state, b_state, fresh):
            await s.close()

    asyncio.run(scenario())


def test_bandit_falls_back_in_process_when_redis_is_down_and_flushes_once_back(redis_server):
    async def scenario() -> None:
        state = RedisBanditState(redis_server.url, "pol/down")
        sel = BanditSelector(BanditParams(context_bits=0, seed=1), state)
        assert await state.sync()
        redis_server.stop()
        _play(sel, 20, {"small": 0.5, "large": 0.5}, np.random.default_rng(0))
        assert not await state.sync()
        r = sel.rank([CHEAP, DEAR], req(None))
        assert "in process only" in r.evidence.notes[0]
        assert state.counts("-", ["small", "large"]).sum() == pytest.approx(20)  # still learning locally
        redis_server.start()
        assert await state.sync() and await state.sync()  # a second sync must not count the batch again
        other = RedisBanditState(redis_server.url, "pol/down")
        assert await other.sync() and other.counts("-", ["small", "large"]).sum() == pytest.approx(20)
        await state.close()
        await other.close()

    asyncio.run(scenario())


def test_knn_rank_is_the_same_code_the_harness_batches(labelled, tmp_path):
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=50.0), AxisEncoder(), tmp_path)
    assert isinstance(sel, CostQualitySelector)
    embs = np.stack([e(1, 0.2, 0), e(0.2, 1, 0), e(0.6, 0.6, 0.1)])
    est, cost = sel.estimate_batch([DEAR, CHEAP], embs, np.full(3, 100), np.full(3, 50))
    ids = ["a", "b", "c"]
    batched, fell_back = sel.choose_batch(est.quality, cost, 50.0, est.similarity, ids, sel.shares_for([DEAR, CHEAP]))
    ranked = [sel.rank([DEAR, CHEAP], req(v, rid)) for v, rid in zip(embs, ids, strict=True)]
    assert batched.tolist() == [r.first for r in ranked]
    assert fell_back.tolist() == [r.evidence.fallback for r in ranked] == [False, False, True]  # (0.6, 0.6): far


def test_make_selector_builds_each_algorithm_and_names_bad_settings(labelled, tmp_path):
    from switchpoint.router.selectors import make_selector

    enc = AxisEncoder()
    assert make_selector("static").algorithm == "static"
    assert make_selector("weighted", weights=[1, 2]).algorithm == "weighted"
    knn = make_selector("knn", dataset=labelled, k=3, lam=100.0, encoder=enc, cache_dir=tmp_path)
    assert knn.rank([DEAR, CHEAP], req(e(0.1, 1, 0))).keys[0] == "cheap-pool"
    cq = make_selector("cost-quality", dataset=labelled, lam=0.0, encoder=None)
    assert cq.rank([CHEAP, DEAR], req(None)).keys[0] == "dear-pool"  # no encoder: the dataset means
    assert make_selector("bandit", lam=10.0, exploration=0.5).algorithm == "bandit"
    for kwargs, message in [({"algorithm": "magic"}, "unknown selection algorithm"),
                            ({"algorithm": "knn", "encoder": enc}, "needs a dataset"),
                            ({"algorithm": "knn", "dataset": labelled}, "needs the router's encoder"),
                            ({"algorithm": "weighted"}, "one weight per candidate"),
                            ({"algorithm": "bandit", "target_quality_share": 0.9}, "lambda, not a target"),
                            ({"algorithm": "knn", "dataset": labelled, "encoder": enc, "k": 0}, "k must be")]:
        algorithm = kwargs.pop("algorithm")
        with pytest.raises(SelectorError, match=message):
            make_selector(algorithm, cache_dir=tmp_path, **kwargs)


# -- do no harm: the fallback -----------------------------------------------------------------------------
def test_knn_far_from_its_data_falls_back_to_the_declared_order_at_its_static_shares(labelled, tmp_path):
    from switchpoint.router.selectors.guard import GuardParams

    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=100.0, guard=GuardParams(min_similarity=0.9)),
                       AxisEncoder(), tmp_path)
    cands = [DEAR, CHEAP]
    shares = sel.shares_for(cands)
    assert shares.tolist() == [0.5, 0.5]  # on its data it sends the 6 math prompts to the dear pool, 6 chat cheap
    near = sel.rank(cands, req(e(1, 0.05, 0), "near"))
    assert near.keys[0] == "dear-pool" and not near.evidence.fallback
    far = [sel.rank(cands, req(e(0, 0, 1), f"far-{i}")) for i in range(200)]  # (0, 0, 1): like no labelled prompt
    assert all(r.evidence.fallback for r in far)
    firsts = Counter(r.keys[0] for r in far)
    assert 70 <= firsts["dear-pool"] <= 130  # drawn at the static shares, 50 % each
    assert all(r.keys == (r.keys[0], *[k for k in ("dear-pool", "cheap-pool") if k != r.keys[0]]) for r in far)
    again = sel.rank(cands, req(e(0, 0, 1), "far-7"))
    assert again.keys == far[7].keys  # the same request id lands alike
    note = far[0].evidence.notes[0]
    assert "fallback" in note and "cosine 0.000" in note and "< 0.900" in note and "dear-pool 50%" in note
    assert far[0].evidence.attributes()["switchpoint.selection.fallback"] is True


def test_a_lead_inside_the_margin_falls_back_and_a_clear_one_does_not(labelled, tmp_path):
    from switchpoint.router.selectors.guard import GuardParams

    # lambda 0: math has a lead of 1.0 (large right, small wrong); chat a lead of 0 (both right)
    sel = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=0.0, guard=GuardParams(min_margin=0.1)),
                       AxisEncoder(), tmp_path)
    assert not sel.rank([DEAR, CHEAP], req(e(1, 0.05, 0), "m")).evidence.fallback
    chat = sel.rank([DEAR, CHEAP], req(e(0.05, 1, 0), "c"))
    assert chat.evidence.fallback and "lead 0.000 < 0.100" in chat.evidence.notes[0]


def test_the_default_guard_comes_from_the_data_and_the_heads_measure_distance_too(labelled, tmp_path):
    knn = knn_selector(KnnParams(dataset=str(labelled), k=3, lam=100.0), AxisEncoder(), tmp_path)
    assert knn.guard.min_similarity == pytest.approx(1.0 - 0.1)  # own nearest-other similarity 1.0, minus slack
    lin = cost_quality_selector(CostQualityParams(lam=100.0, dataset=str(labelled)), AxisEncoder(), tmp_path)
    assert lin.coverage is not None and lin.guard.active
    assert lin.rank([DEAR, CHEAP], req(e(0, 0, 1), "x")).evidence.fallback
    assert not lin.rank([DEAR, CHEAP], req(e(1, 0.1, 0), "y")).evidence.fallback


@pytest.mark.parametrize("kwargs, message", [({"min_similarity": 2.0}, "min_similarity"),
                                             ({"min_margin": -0.1}, "min_margin"),
                                             ({"min_margin": math.nan}, "min_margin")])
def test_guard_params_validation(kwargs, message):
    from switchpoint.router.selectors.guard import GuardParams

    with pytest.raises(SelectorError, match=message):
        GuardParams(**kwargs)


def test_blind_draw_follows_the_shares_and_the_request_id():
    from switchpoint.router.selectors.guard import blind_draw, pick_shares

    ids = [f"req-{i}" for i in range(4000)]
    picks = blind_draw(ids, np.array([0.2, 0.0, 0.8]))
    assert pick_shares(picks, 3)[0] == pytest.approx(0.2, abs=0.03) and pick_shares(picks, 3)[1] == 0.0
    assert blind_draw(ids, np.array([0.2, 0.0, 0.8])).tolist() == picks.tolist()
    with pytest.raises(SelectorError, match="shares"):
        blind_draw(ids, np.array([0.0, 0.0]))


def test_a_sparse_bandit_bucket_starts_from_the_global_posterior():
    sel = BanditSelector(BanditParams(lam=0.0, context_bits=4, exploration=0.0, backoff=20.0))
    other = e(1, 0, 0, 0)
    for _ in range(100):  # traffic elsewhere: large is right, small wrong
        ctx = sel.context(other)
        sel.feedback(ctx, "large", 1.0)
        sel.feedback(ctx, "small", 0.0)
    fresh = -other  # the opposite sign pattern: a bucket with no feedback of its own
    assert sel.context(fresh) != sel.context(other)
    r = sel.rank([CHEAP, DEAR], req(fresh))
    assert r.keys[0] == "dear-pool"  # without backoff the empty bucket would tie and keep the declared order
    no_backoff = BanditSelector(BanditParams(lam=0.0, context_bits=4, exploration=0.0, backoff=0.0), sel.state)
    assert no_backoff.rank([CHEAP, DEAR], req(fresh)).keys[0] == "cheap-pool"
    with pytest.raises(SelectorError, match="backoff"):
        BanditParams(backoff=-1.0)


def test_the_backoff_weighs_a_model_seen_once_as_one_observation():
    sel = BanditSelector(BanditParams(lam=0.0, context_bits=4, exploration=0.0, backoff=20.0))
    v = e(1, 0, 0, 0)
    sel.feedback(sel.context(v), "large", 0.0)  # one failure of the large model, anywhere
    for _ in range(30):
        sel.feedback(sel.context(v), "small", 0.6)
    fresh = -v
    r = sel.rank([CHEAP, DEAR], req(fresh))
    large = next(c for c in r.evidence.candidates if c.key == "dear-pool")
    assert large.quality == pytest.approx(1 / 3)  # Beta(1, 1) + one failure: not 20 pseudo-failures
