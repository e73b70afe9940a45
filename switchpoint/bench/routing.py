"""`switchpoint bench routing`: the selection algorithms on labelled routing data, offline, in and out of
distribution.

Data: data/routing/*.jsonl (the interchange format; routellm_mmlu: two models, dcrouter_train: nine).

Groups before splits. Rows whose normalised prompts are equal, or whose embeddings have cosine >= 0.99, are one
near-duplicate group (union-find), and a group is never split: a twin cannot find its twin across a split.

Protocols (each a list of folds: training rows, test rows, and the groups tuning may use inside training):
- random-split: 30 % of the groups are the test split, by a hash of their first prompt (in distribution);
  tuning by 3-fold cross-validation over hashed groups of the training split.
- leave-family-out (routellm_mmlu): the 57 MMLU subjects in five families (data/routing/mmlu_families.json);
  each family is held out in turn; tuning by leave-one-training-family-out.
- leave-source-out (dcrouter): the file names no task, so each prompt gets the family of the benchmark it looks
  drawn from (source_family: code, maths notation, word problems, long reading passages, search-style queries,
  other short questions; a heuristic on the text) and each family is held out in turn, tuned as above.
Everything is tuned on the training rows only — kNN's k, weighting and shrinkage, the heads' L2, the cost basis,
the fallback's thresholds, the bandit's context bits — and the best algorithm is the one with the best tuning
score. A request's expected output is what a router knows at request time (the policy's default output tokens,
256), never a row's true output length.

Each algorithm runs through switchpoint.router.selectors: knn and cost-quality through
CostQualitySelector.estimate_batch + choose_batch (what rank() itself calls, batched over the test prompts),
with the do-no-harm fallback of router/selectors/guard.py at thresholds tuned on the training groups, with the
fallback a live selector builds by default ("(default fallback)": default_guard on its labelled data) and
without it ("(no fallback)", the ablation); the bandit through rank() per prompt (it learns online: the
training rows streamed once, then the test rows, whose picks are scored). A lambda sweep gives each a curve
of (mean cost, mean quality, strong-call share) points.

Baselines, realised on the same test rows: random mixing is the weighted selector's draws between adjacent
models of the single models' hull (RouterBench's zero router, with its sampling noise; "random-line" is the
noise-free expectation), and every learned router has a prompt-blind twin: at each of its points, the same
shares of calls to each model drawn by a hash of the request id. "vs blind" is the router's metric minus its
twin's. 95 % confidence intervals: a paired bootstrap over test rows (the same resamples for every router of
a fold; out of distribution, each fold resampled and the folds' metrics averaged). The oracle picks per row
from the true scores; its two-model curve stays flat after its best (RouteLLM's).

Metrics (routing_metrics.py): APGR and CPT on the strong-call share (two models), AIQ (all). Out of
distribution a protocol's figure is the mean over its held-out folds (each family weighs the same).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from switchpoint.bench.routing_metrics import aiq, apgr, cpt, nondecreasing_hull
from switchpoint.config.model import WorkloadRules
from switchpoint.router.selectors import (
    BanditParams,
    BanditSelector,
    CandidateModel,
    SelectionRequest,
    WeightedParams,
    WeightedSelector,
)
from switchpoint.router.selectors.base import candidate_costs, decision_costs, first_choice
from switchpoint.router.selectors.costquality import (
    CostQualityParams,
    CostQualitySelector,
    KnnParams,
    cost_quality_selector,
    coverage_index,
    knn_selector,
    lambda_grid,
    own_guard,
    priced,
)
from switchpoint.router.selectors.dataset import RoutingDataset, load_dataset
from switchpoint.router.selectors.estimators import KnnEstimator, LinearEstimator, MeanEstimator
from switchpoint.router.selectors.guard import OFF, GuardParams, draw, hash_uniforms, pick_shares
from switchpoint.router.selectors.index import KnnIndex, TextEncoder, embed_dataset, normalise
from switchpoint.router.selectors.simple import unit_hash

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data" / "routing"
DATASETS = {"routellm_mmlu": "routellm_mmlu.jsonl", "dcrouter": "dcrouter_train.jsonl"}
FAMILIES_FILE = "mmlu_families.json"
OOD_PROTOCOL = {"routellm_mmlu": "leave-family-out", "dcrouter": "leave-source-out"}
TEST_SHARE = 0.3
SPLIT_SALT = "switchpoint-routing-split"
INNER_SALT = "switchpoint-routing-inner"
BLIND_SALT = "switchpoint-routing-blind"
NEAR_DUPLICATE = 0.99
EXPECTED_OUTPUT = WorkloadRules.default_output_tokens  # a request without max_tokens, as the router sees it
DEFAULT_PLOT = ROOT / "docs" / "routing-curves.png"
QUICK_PLOT = ROOT / "bench-results" / "routing-curves-quick.png"
K_GRID = (5, 10, 20, 40, 80, 160)
TEMPERATURE_GRID = (0.0, 0.02, 0.05)
PRIOR_GRID = (0.0, 20.0)
L2_GRID = (1e-4, 1e-3, 1e-2)
BASES = ("absolute", "relative")
SIMILARITY_QUANTILES = (0.05, 0.15, 0.3, 0.5)  # of the training rows' out-of-group similarity: fallback below
MARGIN_GRID = (0.0, 0.02, 0.05)
ALWAYS = 1.01  # a min_similarity no request reaches: always the fallback (the guard's degenerate choice)
BANDIT_BITS = (0, 2, 4)
BANDIT_LAMBDAS = 11
BANDIT_TUNE_STREAM, BANDIT_TUNE_HELD = 4000, 1500  # rows streamed, then scored, when tuning the context bits
BOOTSTRAP = 200
QUICK_ROWS = {"routellm_mmlu": 2400, "dcrouter": 1500}
LEARNED = ("knn", "cost-quality", "bandit")
OFFLINE = ("knn", "cost-quality")
FLOORED = (*LEARNED, "knn (default fallback)", "cost-quality (default fallback)")
FLOOR_AIQ = 0.99  # x random mixing
FLOOR_APGR = 0.49


# -- the data, its groups and the protocols ----------------------------------------------------------------
@dataclass
class Corpus:
    name: str
    data: RoutingDataset
    emb: np.ndarray
    groups: np.ndarray  # (n,) near-duplicate group: the smallest row index of the group
    families: np.ndarray  # (n,) str: the family of the row's group
    candidates: list[CandidateModel]

    @property
    def two_model(self) -> bool:
        return len(self.data.models) == 2

    @property
    def strong(self) -> int:
        return strong_index(self.data)


@dataclass
class Fold:
    protocol: str
    name: str
    train: np.ndarray  # row indices
    test: np.ndarray
    inner: np.ndarray  # (len(train),) the group label tuning holds out in turn


def normalised_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def near_duplicate_groups(prompts: Sequence[str], emb: np.ndarray, threshold: float = NEAR_DUPLICATE,
                          chunk: int = 1024) -> np.ndarray:
    """(n,) the smallest row index of each row's group: equal normalised prompts or cosine >= threshold, closed
    transitively (union-find)."""
    n = len(prompts)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def union(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        j = first.setdefault(normalised_prompt(p), i)
        if j != i:
            union(j, i)
    x = normalise(emb)
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if c > r:
                union(int(r), int(c))
    return np.array([root(i) for i in range(n)])


SOURCE_RULES = (  # (family, pattern) in order; the first that matches wins
    ("code", re.compile(r"def |```|\bpython\b|[Ww]rite a (python )?function")),
    ("maths-notation", re.compile(r"\$|\\frac|\\boxed|\\\(")),
    ("reading", re.compile(r"(?s).{700}")),
    ("word-problem", re.compile(r"(?i)(?=.*\d)(?=.*\b(how many|how much|what is the|total|each)\b)")),
)


def source_family(prompt: str) -> str:
    """The kind of benchmark a prompt looks drawn from (a heuristic on its text; dcrouter records no task)."""
    for name, pattern in SOURCE_RULES:
        if pattern.search(prompt):
            return name
    if prompt[:1].islower() and not prompt.rstrip().endswith(("?", ".")):
        return "search-query"
    return "short-question"


def row_families(name: str, data: RoutingDataset, data_dir: Path) -> np.ndarray:
    if name == "routellm_mmlu":
        mapping = json.loads((data_dir / FAMILIES_FILE).read_text())["families"]
        missing = sorted({t for t in data.tasks if t not in mapping})
        if missing:
            raise SystemExit(f"{data_dir / FAMILIES_FILE}: no family for task(s) {', '.join(missing)}")
        return np.array([mapping[t] for t in data.tasks])
    return np.array([source_family(p) for p in data.prompts])


def protocols(c: Corpus) -> dict[str, list[Fold]]:
    key = [normalised_prompt(c.data.prompts[g]) for g in c.groups]
    test = np.array([unit_hash(SPLIT_SALT, k) < TEST_SHARE for k in key])
    inner = np.array([int(unit_hash(INNER_SALT, k) * 3) for k in key])
    train_rows, test_rows = np.nonzero(~test)[0], np.nonzero(test)[0]
    out = {"random-split": [Fold("random-split", "test split", train_rows, test_rows, inner[train_rows])]}
    folds = []
    for fam in sorted(set(c.families.tolist())):
        held = c.families == fam
        tr = np.nonzero(~held)[0]
        folds.append(Fold(OOD_PROTOCOL[c.name], str(fam), tr, np.nonzero(held)[0], c.families[tr]))
    out[OOD_PROTOCOL[c.name]] = folds
    return out


def quick_subset(data: RoutingDataset, limit: int) -> np.ndarray:
    """The `limit` rows with the smallest id hash (a fixed subsample)."""
    if len(data) <= limit:
        return np.arange(len(data))
    keys = np.array([unit_hash("switchpoint-routing-quick", i) for i in data.ids])
    return np.sort(np.argsort(keys)[:limit])


def candidates_of(data: RoutingDataset) -> list[CandidateModel]:
    """The dataset's models as candidates, priced as the data's costs imply (RoutingDataset.prices)."""
    return [CandidateModel(m, m, pin, pout) for m, (pin, pout) in data.prices().items()]


def strong_index(data: RoutingDataset) -> int:
    return int(np.argmax(data.costs.mean(axis=0)))


# -- curves ---------------------------------------------------------------------------------------------------
def outcome(data: RoutingDataset, pick: np.ndarray) -> tuple[float, float]:
    """(mean USD, mean quality) of choosing column pick[i] for row i (the stored, true costs and scores)."""
    r = np.arange(len(pick))
    return float(data.costs[r, pick].mean()), float(data.scores[r, pick].mean())


def sweep_cost_quality(data: RoutingDataset, quality: np.ndarray, cost: np.ndarray,
                       lams: np.ndarray) -> list[tuple[float, float, float, float]]:
    """(lambda, cost, quality, strong share) per lambda: the first choice of each row (first_choice)."""
    strong = strong_index(data)
    out = []
    for lam in lams:
        pick = first_choice(quality, cost, float(lam))
        c, q = outcome(data, pick)
        out.append((float(lam), c, q, float(np.mean(pick == strong))))
    return out


def close_two_model(share: Sequence[float], quality: Sequence[float], weak: float, strong: float,
                    flat_top: bool = False) -> tuple[list[float], list[float]]:
    """A sweep closed at share 0 (the weak model) and share 1 (the strong model; flat_top: the sweep's best
    quality, as RouteLLM draws the oracle), as RouteLLM's threshold sweeps always are."""
    s, q = list(share), list(quality)
    if min(s) > 0:
        s.append(0.0)
        q.append(weak)
    if max(s) < 1:
        s.append(1.0)
        q.append(max(q) if flat_top else strong)
    return s, q


@dataclass
class Run:
    """One router on one fold: its picks on the test rows at each point of its sweep."""

    picks: np.ndarray  # (P, n_test) column indices
    params: dict = field(default_factory=dict)
    train_score: float | None = None  # the tuning objective on the training rows (None: nothing tuned)
    fallback: np.ndarray | None = None  # (P,) share of test rows that fell back
    rank_us: float | None = None
    flat_top: bool = False


def curve(data: RoutingDataset, picks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(3, P) or with bootstrap weights (B, n): (3, B, P) mean cost, mean quality, strong share per point."""
    r = np.arange(picks.shape[1])
    q, c, s = data.scores[r, picks], data.costs[r, picks], (picks == strong_index(data)).astype(np.float64)
    if weights is None:
        return np.stack([c.mean(axis=1), q.mean(axis=1), s.mean(axis=1)])
    n = picks.shape[1]
    return np.stack([weights @ c.T / n, weights @ q.T / n, weights @ s.T / n])


def metrics(cost: np.ndarray, qual: np.ndarray, share: np.ndarray, max_cost: float, weak_q: float | None,
            strong_q: float | None, flat_top: bool = False, pcts: Sequence[int] = (50,)) -> dict:
    out: dict = {"aiq": aiq(np.column_stack([cost, qual]), max_cost)}
    if weak_q is not None and strong_q is not None:
        if strong_q == weak_q:  # a bootstrap resample can tie them: APGR and CPT are undefined there
            return out | {"apgr": np.nan} | {f"cpt{pct}": None for pct in pcts}
        s, q = close_two_model(share, qual, weak_q, strong_q, flat_top)
        out["apgr"] = apgr(s, q, weak_q, strong_q)
        for pct in pcts:
            out[f"cpt{pct}"] = cpt(s, q, weak_q, strong_q, pct / 100)
    return out


def curve_score(data: RoutingDataset, picks: np.ndarray, max_cost: float) -> float:
    """The tuning objective on training rows: APGR for two models, AIQ otherwise."""
    cost, qual, share = curve(data, picks)
    max_cost = max(max_cost, float(cost.max()))
    if len(data.models) == 2:
        s, w = strong_index(data), 1 - strong_index(data)
        return metrics(cost, qual, share, max_cost, data.scores[:, w].mean(), data.scores[:, s].mean())["apgr"]
    return metrics(cost, qual, share, max_cost, None, None)["aiq"]


# -- learned estimators: tuning inside the training groups, then the test sweep -----------------------------
@dataclass
class Tuned:
    """An estimator's out-of-group predictions on the training rows, at its tuned parameters."""

    params: dict
    quality: np.ndarray  # (n_train, m)
    cost: np.ndarray  # (n_train, m) predicted USD
    similarity: np.ndarray  # (n_train,) to the nearest labelled prompt outside the row's group
    basis: str
    score: float


def inner_parts(inner: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rest, held) positions for each inner group."""
    return [(np.nonzero(inner != g)[0], np.nonzero(inner == g)[0]) for g in sorted(set(inner.tolist()))]


def best_basis(train: RoutingDataset, quality: np.ndarray, cost: np.ndarray, points: int,
               max_cost: float) -> tuple[float, str]:
    best: tuple[float, str] | None = None
    for basis in BASES:
        weighed = decision_costs(cost, basis)
        picks = np.stack([first_choice(quality, weighed, float(lam)) for lam in lambda_grid(weighed, points)])
        score = curve_score(train, picks, max_cost)
        if best is None or score > best[0]:
            best = (score, basis)
    assert best is not None
    return best


def tune_knn(c: Corpus, f: Fold, quick: bool) -> tuple[Tuned, KnnIndex]:
    train, temb = c.data.take(f.train), c.emb[f.train]
    index = KnnIndex.from_dataset(train, temb, "bench")
    parts = inner_parts(f.inner)
    k_grid = [k for k in ((10, 40) if quick else K_GRID) if k <= min(len(rest) for rest, _ in parts)] or [1]
    idx = np.zeros((len(train), max(k_grid)), dtype=np.int64)
    sims = np.zeros((len(train), max(k_grid)))
    for rest, held in parts:
        sub = KnnIndex(temb[rest], train.scores[rest], train.output_tokens[rest].astype(np.float64),
                       [train.ids[i] for i in rest], train.models, "bench", train.digest)
        i, s = sub.neighbours(temb[held], max(k_grid))
        idx[held], sims[held] = rest[i], s
    models = [m.model for m in c.candidates]
    cols, known = KnnEstimator(index).columns(models)
    max_cost = float(train.costs.mean(axis=0).max())
    best: Tuned | None = None
    for k, temp, prior in itertools.product(k_grid, (0.0,) if quick else TEMPERATURE_GRID,
                                            (0.0,) if quick else PRIOR_GRID):
        est = KnnEstimator(index, k, temp, prior).estimate_neighbours(idx, sims, cols, known)
        cost = priced(c.candidates, est, train.input_tokens, np.full(len(train), EXPECTED_OUTPUT))
        score, basis = best_basis(train, est.quality, cost, 31 if quick else 61, max_cost)
        if best is None or score > best.score:
            best = Tuned({"k": k, "temperature": temp, "prior_strength": prior}, est.quality, cost, sims[:, 0],
                         basis, score)
    assert best is not None
    return best, index


def tune_linear(c: Corpus, f: Fold, quick: bool) -> Tuned:
    train, temb = c.data.take(f.train), c.emb[f.train]
    max_cost = float(train.costs.mean(axis=0).max())
    parts = inner_parts(f.inner)
    sim = np.empty(len(train))
    for rest, held in parts:
        sim[held] = coverage_index(train.take(rest), temb[rest], "bench").similarities(temb[held]).max(axis=1)
    # the heads predict each model's mean output length on their data, as the mean estimator does
    cost = priced(c.candidates, MeanEstimator(train).estimate(temb, [m.model for m in c.candidates]),
                  train.input_tokens, np.full(len(train), EXPECTED_OUTPUT))
    best: Tuned | None = None
    for l2 in (1e-3,) if quick else L2_GRID:
        q = np.empty(train.scores.shape)
        for rest, held in parts:
            heads = LinearEstimator.fit(train.take(rest), temb[rest], l2)
            q[held] = heads.estimate(temb[held], [m.model for m in c.candidates]).quality
        score, basis = best_basis(train, q, cost, 31 if quick else 61, max_cost)
        if best is None or score > best.score:
            best = Tuned({"l2": l2}, q, cost, sim, basis, score)
    assert best is not None
    return best


def guarded_runs(algorithm: str, tuned: Tuned, make: Callable[[GuardParams], CostQualitySelector], c: Corpus,
                 f: Fold, quick: bool, timed: bool, default: GuardParams) -> dict[str, Run]:
    """Tune the fallback's thresholds on the training rows' out-of-group predictions, then sweep lambda on the
    test rows with them (`algorithm`), with the fallback a live selector builds by default (`algorithm (default
    fallback)`: default_guard on its labelled data) and without a fallback (`algorithm (no fallback)`)."""
    train, test = c.data.take(f.train), c.data.take(f.test)
    m = len(c.candidates)
    max_cost = float(train.costs.mean(axis=0).max())
    weighed = decision_costs(tuned.cost, tuned.basis)
    lams = lambda_grid(weighed, 41 if quick else 121)
    base = [first_choice(tuned.quality, weighed, float(lam)) for lam in lams]
    shares = [pick_shares(b, m) for b in base]  # the static shares at each lambda, as shares_for() finds them
    thresholds = [-1.0, *np.quantile(tuned.similarity, SIMILARITY_QUANTILES).tolist(), ALWAYS]
    best: tuple[float, GuardParams] | None = None
    u_train, u_test = hash_uniforms(train.ids), hash_uniforms(test.ids)  # the fallback's draws, hashed once
    for thr, margin in itertools.product(thresholds, (0.0, 0.05) if quick else MARGIN_GRID):
        guard = GuardParams(min(float(thr), ALWAYS), margin)
        sel = make(guard)
        picks = np.stack([sel.choose_batch(tuned.quality, weighed, float(lam), tuned.similarity, train.ids, sh,
                                           u_train)[0] for lam, sh in zip(lams, shares, strict=True)])
        score = curve_score(train, picks, max_cost)
        if best is None or score > best[0] + 1e-9:
            best = (score, guard)
    assert best is not None
    out = {}
    est, cost = make(OFF).estimate_batch(c.candidates, c.emb[f.test], test.input_tokens,
                                         np.full(len(test), EXPECTED_OUTPUT))
    w = decision_costs(cost, tuned.basis)
    for guarded, name, guard, score in ((True, algorithm, best[1], best[0]),
                                        (False, f"{algorithm} (default fallback)", default, None),
                                        (False, f"{algorithm} (no fallback)", OFF, tuned.score)):
        sel = make(guard)
        chosen = [sel.choose_batch(est.quality, w, float(lam), est.similarity, test.ids, sh, u_test)
                  for lam, sh in zip(lams, shares, strict=True)]
        params = {**tuned.params, "cost_basis": tuned.basis}
        if guard.active:
            params |= {"min_similarity": round(guard.min_similarity, 4), "min_margin": guard.min_margin}
        run = Run(np.stack([p for p, _ in chosen]), params, score, np.array([d.mean() for _, d in chosen]))
        if timed and guarded:
            run.rank_us = time_rank(sel, c.candidates, c.emb[f.test], test)
        out[name] = run
    return out


def time_rank(sel: CostQualitySelector, candidates: list[CandidateModel], emb: np.ndarray, data: RoutingDataset,
              n: int = 300) -> float:
    """Median microseconds of one rank() call (one request, the whole index scanned)."""
    sel.prepare(candidates)
    times = []
    for i in range(min(n, len(data))):
        req = SelectionRequest(int(data.input_tokens[i]), EXPECTED_OUTPUT, emb[i], data.ids[i])
        t0 = time.perf_counter()
        sel.rank(candidates, req)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e6, 1)


def rank_cost(c: Corpus, path: Path, encoder: TextEncoder, k: int, n: int = 300) -> dict:
    """rank() of the selectors a policy builds on the whole shipped file (make_selector's path, fallback on),
    timed on the file's own prompts; the baseline in the same run: the kNN index scoring every row in all its
    dimensions. knn_recall: the share of the baseline's k neighbours the index's own search finds for the timed
    prompts (each leaving itself out); knn_index_recall: the same measured by the index at build (top 40)."""
    queries = quick_subset(c.data, n)
    data = c.data.take(queries)
    emb = c.emb[queries]
    out: dict = {"rows": len(load_dataset(path)), "k": k}
    indexes = []
    for key, lists in (("knn_us_p50", None), ("knn_full_dims_us_p50", 0)):
        sel = knn_selector(KnnParams(dataset=str(path), k=k, lam=0.0, lists=lists), encoder)
        out[key] = time_rank(sel, c.candidates, emb, data)
        assert isinstance(sel.estimator, KnnEstimator)
        indexes.append(sel.estimator.index)
    out["knn_recall"] = neighbour_recall(indexes[0], indexes[1], emb, data.ids, k)
    out["knn_index_recall"] = round(indexes[0].recall, 4)
    cq = cost_quality_selector(CostQualityParams(lam=0.0, dataset=str(path)), encoder)
    out["cost_quality_us_p50"] = time_rank(cq, c.candidates, emb, data)
    return out


def neighbour_recall(index: KnnIndex, exact: KnnIndex, emb: np.ndarray, ids: Sequence[str], k: int) -> float:
    """Mean share of `exact`'s k neighbours of each query that `index` finds too (a query in the index leaves
    itself out of both)."""
    row = {rid: i for i, rid in enumerate(exact.ids)}
    own = np.array([row.get(rid, -1) for rid in ids])
    found, _ = index.neighbours(emb, k, own)
    truth, _ = exact.neighbours(emb, k, own)
    return round(float(np.mean([np.isin(t, f).mean() for t, f in zip(truth, found, strict=True)])), 4)


def run_knn(c: Corpus, f: Fold, quick: bool, timed: bool) -> dict[str, Run]:
    tuned, index = tune_knn(c, f, quick)
    train = c.data.take(f.train)
    p = tuned.params
    est = KnnEstimator(index, p["k"], p["temperature"], p["prior_strength"])

    def make(guard: GuardParams) -> CostQualitySelector:
        return CostQualitySelector(est, lam=0.0, algorithm="knn", calibration=(train, c.emb[f.train]),
                                   cost_basis=tuned.basis, guard=guard)  # type: ignore[arg-type]
    return guarded_runs("knn", tuned, make, c, f, quick, timed, own_guard(index))


def run_linear(c: Corpus, f: Fold, quick: bool, timed: bool) -> dict[str, Run]:
    tuned = tune_linear(c, f, quick)
    train, temb = c.data.take(f.train), c.emb[f.train]
    heads = LinearEstimator.fit(train, temb, tuned.params["l2"])
    coverage = coverage_index(train, temb, "bench")

    def make(guard: GuardParams) -> CostQualitySelector:
        return CostQualitySelector(heads, lam=0.0, calibration=(train, temb), cost_basis=tuned.basis,  # type: ignore[arg-type]
                                   guard=guard, coverage=coverage)
    return guarded_runs("cost-quality", tuned, make, c, f, quick, timed, own_guard(coverage))


def bandit_stream(c: Corpus, sel: BanditSelector, rows: Sequence[int]) -> np.ndarray:
    """Route each row in turn with rank() and feed its true score back (the Report): the picks."""
    picks = np.empty(len(rows), dtype=np.int64)
    for n, i in enumerate(rows):
        r = sel.rank(c.candidates, SelectionRequest(int(c.data.input_tokens[i]), EXPECTED_OUTPUT, c.emb[i],
                                                    c.data.ids[i]))
        picks[n] = r.first
        sel.feedback(r.evidence.context or "-", c.candidates[r.first].model, float(c.data.scores[i, r.first]))
    return picks


def run_bandit(c: Corpus, f: Fold, quick: bool, basis: str) -> Run:
    """Online: the training rows streamed once (shuffled, fixed seed), then the test rows, learning throughout.
    context_bits is tuned on the training rows (stream the other groups, score the picks on the held-out group
    of one inner split); the cost basis is the one kNN's tuning chose."""
    train = c.data.take(f.train)
    cost = candidate_costs(c.candidates, train.input_tokens, np.full(len(train), EXPECTED_OUTPUT))
    lams = lambda_grid(decision_costs(cost, basis), 5 if quick else BANDIT_LAMBDAS)
    rng = np.random.default_rng(7)
    rest, held = inner_parts(f.inner)[0]
    rest, held = rng.permutation(rest)[:BANDIT_TUNE_STREAM], rng.permutation(held)[:BANDIT_TUNE_HELD]
    max_cost = float(train.costs.mean(axis=0).max())
    best: tuple[float, int] | None = None
    for bits in (0, 4) if quick else BANDIT_BITS:
        picks = []
        for lam in lams:
            sel = BanditSelector(BanditParams(lam=float(lam), context_bits=bits, seed=11, cost_basis=basis))
            bandit_stream(c, sel, f.train[rng.permutation(rest)])
            picks.append(bandit_stream(c, sel, f.train[held]))
        score = curve_score(train.take(held), np.stack(picks), max_cost)
        if best is None or score > best[0]:
            best = (score, bits)
    assert best is not None
    order = f.train[np.random.default_rng(7).permutation(len(f.train))]
    picks = []
    for lam in lams:
        sel = BanditSelector(BanditParams(lam=float(lam), context_bits=best[1], seed=11, cost_basis=basis))
        bandit_stream(c, sel, order)
        picks.append(bandit_stream(c, sel, f.test))
    return Run(np.stack(picks), {"exploration": 1.0, "context_bits": best[1], "cost_basis": basis,
                                 "backoff": BanditParams().backoff, "warm_start": "training rows streamed once"},
               best[0])


def run_random(c: Corpus, f: Fold, quick: bool) -> Run:
    """Random mixing, realised: the weighted selector between adjacent vertices of the training rows' single-model
    hull, each test row drawn by its request id."""
    train, test = c.data.take(f.train), c.data.take(f.test)
    singles = np.column_stack([train.costs.mean(axis=0), train.scores.mean(axis=0)])
    verts = [int(np.nonzero((singles == v).all(axis=1))[0][0]) for v in nondecreasing_hull(singles)]
    picks = []
    for a, b in itertools.pairwise(verts) if len(verts) > 1 else [(verts[0], verts[0])]:
        for alpha in np.linspace(0, 1, 6 if quick else 11):
            w = [0.0] * len(c.candidates)
            w[a] += 1 - alpha
            w[b] += alpha
            sel = WeightedSelector(WeightedParams(tuple(w)))
            picks.append([sel.rank(c.candidates, SelectionRequest(int(test.input_tokens[i]), EXPECTED_OUTPUT, None,
                                                                  test.ids[i])).first for i in range(len(test))])
    return Run(np.array(picks), {"pairs": [[c.candidates[a].key, c.candidates[b].key]
                                           for a, b in itertools.pairwise(verts)]})


def run_oracle(c: Corpus, f: Fold) -> Run:
    test = c.data.take(f.test)
    picks = [first_choice(test.scores, test.costs, float(lam)) for lam in lambda_grid(test.costs)]
    return Run(np.stack(picks), {}, flat_top=True)


def blind_twin(run: Run, m: int, u: np.ndarray) -> Run:
    """The prompt-blind router at the same shares: each point's share of calls per model, drawn by request id."""
    return Run(np.stack([draw(u, pick_shares(p, m)) for p in run.picks]), {"twin": True})


def run_fold(c: Corpus, f: Fold, quick: bool, log: Callable[[str], None]) -> dict[str, Run]:
    t0 = time.perf_counter()
    timed = f.protocol == "random-split"
    runs = run_knn(c, f, quick, timed)
    runs |= run_linear(c, f, quick, timed)
    runs["bandit"] = run_bandit(c, f, quick, runs["knn"].params["cost_basis"])
    runs["random"] = run_random(c, f, quick)
    runs["oracle"] = run_oracle(c, f)
    test = c.data.take(f.test)
    u = hash_uniforms(test.ids, BLIND_SALT)
    for name in [r for r in runs if r in LEARNED or r.endswith("fallback)")]:
        runs[f"{name} blind"] = blind_twin(runs[name], len(c.candidates), u)
    log(f"  {c.name} {f.protocol} [{f.name}]: {len(f.train)} train / {len(f.test)} test rows, "
        + ", ".join(f"{n} {r.params}" for n, r in runs.items() if n in LEARNED)
        + f" ({time.perf_counter() - t0:.0f} s)")
    return runs


# -- scoring a fold, with bootstrap -------------------------------------------------------------------------
def score_fold(c: Corpus, f: Fold, runs: dict[str, Run], boot: int, seed: int) -> dict[str, dict]:
    """Per router: point metrics, their bootstrap draws (B,), and the curve (for the table and the plot)."""
    test = c.data.take(f.test)
    n = len(test)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=boot).astype(np.float64)
    singles = test.costs.mean(axis=0)
    single_b = weights @ test.costs / n  # (B, m)
    curves = {name: curve(test, r.picks) for name, r in runs.items()}
    curves_b = {name: curve(test, r.picks, weights) for name, r in runs.items()}
    max_cost = max(float(singles.max()), max(float(v[0].max()) for v in curves.values()))
    max_b = np.maximum(single_b.max(axis=1), np.max([v[0].max(axis=1) for v in curves_b.values()], axis=0))
    s, w = c.strong, 1 - c.strong
    two = c.two_model
    wq = test.scores[:, w].mean() if two else None
    sq = test.scores[:, s].mean() if two else None
    wq_b = weights @ test.scores[:, w] / n if two else None
    sq_b = weights @ test.scores[:, s] / n if two else None
    out: dict[str, dict] = {}
    for name, r in runs.items():
        cost, qual, share = curves[name]
        point = metrics(cost, qual, share, max_cost, wq, sq, r.flat_top, (50, 80, 95))
        cb, qb, shb = curves_b[name]
        draws = [metrics(cb[b], qb[b], shb[b], float(max_b[b]), None if wq_b is None else float(wq_b[b]),
                         None if sq_b is None else float(sq_b[b]), r.flat_top) for b in range(boot)]
        entry = {"point": point, "draws": {k: np.array([d[k] if d[k] is not None else np.nan for d in draws])
                                           for k in draws[0]},
                 "curve": (cost, qual, share), "run": r}
        out[name] = entry
    return out


def ci(x: np.ndarray) -> list[float] | None:
    x = x[np.isfinite(x)]
    return None if len(x) == 0 else [round(float(np.quantile(x, 0.025)), 4), round(float(np.quantile(x, 0.975)), 4)]


def summarise(scored: list[dict[str, dict]], folds: list[Fold]) -> dict[str, dict]:
    """A protocol's figure per router: the mean over folds, its bootstrap CI, vs its blind twin, per fold."""
    out: dict[str, dict] = {}
    for name in scored[0]:
        if name.endswith(" blind"):
            continue
        e: dict = {}
        for key in scored[0][name]["point"]:
            vals = [s[name]["point"][key] for s in scored]
            e[key] = None if any(v is None for v in vals) else round(float(np.mean(vals)), 6)
            e[f"{key}_ci"] = ci(np.mean([s[name]["draws"][key] for s in scored], axis=0)) \
                if key in scored[0][name]["draws"] else None
            if e[f"{key}_ci"] is None:
                del e[f"{key}_ci"]
        twin = f"{name} blind"
        if twin in scored[0]:
            e["vs_blind"] = {}
            for key in scored[0][name]["draws"]:
                pt = [s[name]["point"][key] - s[twin]["point"][key] for s in scored
                      if s[name]["point"][key] is not None and s[twin]["point"][key] is not None]
                if len(pt) < len(scored):
                    continue
                d = np.mean([s[name]["draws"][key] - s[twin]["draws"][key] for s in scored], axis=0)
                e["vs_blind"][key] = [round(float(np.mean(pt)), 4), *(ci(d) or [None, None])]
        fb = [s[name]["run"].fallback for s in scored]
        if all(x is not None for x in fb):
            e["fallback_rate"] = round(float(np.mean([x.mean() for x in fb])), 4)  # type: ignore[union-attr]
        ts = [s[name]["run"].train_score for s in scored]
        if all(t is not None for t in ts):
            e["train_score"] = round(float(np.mean(ts)), 6)  # type: ignore[arg-type]
        e["params"] = [s[name]["run"].params for s in scored] if len(scored) > 1 else scored[0][name]["run"].params
        if len(scored) > 1:
            e["folds"] = {f.name: {k: (None if v is None else round(float(v), 6))
                                   for k, v in s[name]["point"].items() if k in ("aiq", "apgr", "cpt50")}
                          | {"rows": len(f.test)} for s, f in zip(scored, folds, strict=True)}
        rank_us = [s[name]["run"].rank_us for s in scored if s[name]["run"].rank_us is not None]
        if rank_us:
            e["rank_us_p50"] = rank_us[0]
        out[name] = e
    return out


def single_and_line(c: Corpus, f: Fold, scored: dict[str, dict]) -> dict[str, dict]:
    """The in-distribution report's extra rows: each single model, and random mixing's noise-free line."""
    test = c.data.take(f.test)
    max_cost = max(float(test.costs.mean(axis=0).max()), max(float(v["curve"][0].max()) for v in scored.values()))
    out = {}
    for j, m in enumerate(test.models):
        cst, q = float(test.costs[:, j].mean()), float(test.scores[:, j].mean())
        out[f"single:{m}"] = {"aiq": round(aiq([(cst, q)], max_cost), 6), "points": [[cst, q]],
                              "share": 1.0 if j == c.strong else 0.0}
    singles = np.column_stack([test.costs.mean(axis=0), test.scores.mean(axis=0)])
    hull = nondecreasing_hull(singles)
    line: dict = {"aiq": round(aiq(hull, max_cost), 6), "points": hull.tolist(),
                  "params": {"definition": "noise-free convex mixes of the single models (the expectation)"}}
    if c.two_model:
        line |= {"apgr": 0.5, "cpt50": 0.5}
    out["random-line"] = line
    return out


def best_single_aiq(c: Corpus, f: Fold, scored: dict[str, dict]) -> float:
    """The best single model's AIQ on a fold, on the fold's cost axis (as score_fold scores the routers)."""
    test = c.data.take(f.test)
    max_cost = max(float(test.costs.mean(axis=0).max()), max(float(v["curve"][0].max()) for v in scored.values()))
    return max(aiq([(float(test.costs[:, j].mean()), float(test.scores[:, j].mean()))], max_cost)
               for j in range(len(test.models)))


def curve_entry(c: Corpus, e: dict) -> dict:
    cost, qual, share = e["curve"]
    out = {k: (None if v is None else round(float(v), 6)) for k, v in e["point"].items()}
    out["points"] = [[round(float(x), 12), round(float(y), 6)] for x, y in zip(cost, qual, strict=True)]
    if c.two_model:
        out["strong_share"] = [round(float(x), 6) for x in share]
    return out


# -- verdicts -------------------------------------------------------------------------------------------------
def floor(report: dict[str, dict], two_model: bool) -> dict:
    """Do no harm: every selector >= random mixing - 1 % AIQ and (two models) APGR >= 0.49."""
    rand = report["random"]["aiq"]
    out: dict = {"random_aiq": rand, "routers": {}}
    for name in FLOORED:
        v = report[name]
        ok_aiq = v["aiq"] >= FLOOR_AIQ * rand
        ok_apgr = (v["apgr"] >= FLOOR_APGR) if two_model else True
        out["routers"][name] = {"aiq_ok": bool(ok_aiq), "apgr_ok": bool(ok_apgr)}
    out["ok"] = all(r["aiq_ok"] and r["apgr_ok"] for r in out["routers"].values())
    return out


def targets(protocol: str, report: dict[str, dict], singles_aiq: float, two_model: bool) -> dict:
    """The best offline learner by its tuning score on the training groups (never by its test figure), against
    the issue's targets. The bandit's tuning score (an online stream) is of another kind and is not compared."""
    best = max(OFFLINE, key=lambda a: report[a].get("train_score", -np.inf))
    b = report[best]
    if two_model:
        ok = b["apgr"] >= 0.55 and b["cpt50"] is not None and b["cpt50"] <= 0.45
        cpt50 = "never" if b["cpt50"] is None else f"{b['cpt50']:.1%}"
        line = (f"{protocol}: best on training {best}: APGR {b['apgr']:.3f} (target >= 0.55), CPT(50%) {cpt50} "
                f"(target <= 45%)")
    else:
        base = max(report["random"]["aiq"], singles_aiq)
        ok = b["aiq"] >= 1.03 * base
        line = (f"{protocol}: best on training {best}: AIQ {b['aiq']:.4f} vs the better of random mixing and the "
                f"best single model {base:.4f} ({b['aiq'] / base - 1:+.1%}; target >= +3%)")
    return {"met": bool(ok), "best": best, "lines": [line]}


# -- the command ----------------------------------------------------------------------------------------------
def load_corpus(name: str, data_dir: Path, encoder: TextEncoder, quick: bool,
                log: Callable[[str], None]) -> Corpus:
    data = load_dataset(data_dir / DATASETS[name])
    t0 = time.perf_counter()
    emb = embed_dataset(data, encoder, None)
    if quick:
        keep = quick_subset(data, QUICK_ROWS[name])
        data, emb = data.take(keep), emb[keep]
    groups = near_duplicate_groups(data.prompts, emb)
    fams = row_families(name, data, data_dir)[groups]  # a group takes the family of its first row
    log(f"{name}: {len(data)} rows in {len(set(groups.tolist()))} near-duplicate groups, {len(data.models)} models, "
        f"{len(set(fams.tolist()))} families, embeddings {emb.shape[1]}-d from {encoder.name} "
        f"({time.perf_counter() - t0:.1f} s incl. cache)")
    return Corpus(name, data, emb, groups, fams, candidates_of(data))


def run(args: argparse.Namespace) -> int:
    from switchpoint.router.classifiers.encoder import DEFAULT_ENCODER, load_encoder

    quiet = args.json
    log: Callable[[str], None] = (lambda s: print(s, file=sys.stderr)) if quiet else print
    encoder = load_encoder(args.encoder or DEFAULT_ENCODER)
    data_dir = Path(args.data) if args.data else DATA_DIR
    names = args.datasets or list(DATASETS)
    boot = 50 if args.quick else BOOTSTRAP
    started = time.perf_counter()
    datasets: dict[str, dict] = {}
    protocol_reports: dict[str, dict] = {}
    verdicts: dict[str, dict] = {}
    floors: dict[str, dict] = {}
    costs: dict[str, dict] = {}
    for name in names:
        c = load_corpus(name, data_dir, encoder, args.quick, log)
        for protocol, folds in protocols(c).items():
            scored = [score_fold(c, f, run_fold(c, f, args.quick, log), boot, seed=17 + i)
                      for i, f in enumerate(folds)]
            rep = summarise(scored, folds)
            key = f"{name}/{protocol}"
            protocol_reports[key] = rep
            floors[key] = floor(rep, c.two_model)
            singles = float(np.mean([best_single_aiq(c, f, s) for s, f in zip(scored, folds, strict=True)]))
            verdicts[key] = targets(key, rep, singles, c.two_model)
            if protocol == "random-split":
                datasets[name] = single_and_line(c, folds[0], scored[0]) | {
                    r: curve_entry(c, e) | {"params": e["run"].params} for r, e in scored[0].items()
                    if not r.endswith(" blind")}
                for r, e in scored[0].items():
                    if e["run"].rank_us is not None:
                        datasets[name][r]["rank_us_p50"] = e["run"].rank_us
                costs[name] = rank_cost(c, data_dir / DATASETS[name], encoder, scored[0]["knn"]["run"].params["k"])
    plot_path = Path(args.plot) if args.plot else (QUICK_PLOT if args.quick else DEFAULT_PLOT)
    plot = None if args.no_plot else plot_curves(datasets, plot_path)
    ood = {k: rep for k, rep in protocol_reports.items() if not k.endswith("random-split")}
    out = {"ood": ood, "random_split": {k.split("/")[0]: v for k, v in protocol_reports.items()
                                        if k.endswith("random-split")},
           "floor": floors, "targets": verdicts, "datasets": datasets, "rank_cost": costs, "encoder": encoder.name,
           "quick": bool(args.quick), "bootstrap": boot, "expected_output_tokens": EXPECTED_OUTPUT,
           "near_duplicate_cosine": NEAR_DUPLICATE, "plot": plot, "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(out))
        return 0
    for key, rep in protocol_reports.items():
        print_table(key, rep, floors[key])
        for line in verdicts[key]["lines"]:
            print(line)
    for name, rc in costs.items():
        print(f"{name}: one rank() on the shipped file ({rc['rows']} rows, median): knn (k={rc['k']}) "
              f"{rc['knn_us_p50']:.0f} us, recall of the exact neighbours {rc['knn_recall']:.3f} (every row in "
              f"all dimensions: {rc['knn_full_dims_us_p50']:.0f} us), cost-quality {rc['cost_quality_us_p50']:.0f} us")
    if plot:
        print(f"plot: {plot}")
    return 0


def print_table(key: str, rep: dict[str, dict], fl: dict) -> None:
    two = any("apgr" in v for v in rep.values())

    def num(v: dict, k: str, fmt: str) -> str:
        x = v.get(k)
        return "-" if x is None else format(x, fmt)

    def ci_s(v: dict, k: str) -> str:
        c = v.get(f"{k}_ci")
        return "" if not c else f"[{c[0]:.3f}, {c[1]:.3f}]"

    print(f"\n{key}" + ("" if key.endswith("random-split") else " (mean over held-out folds)")
          + f"  floor: {'holds' if fl['ok'] else 'BROKEN'}")
    head = f"  {'router':<34}{'AIQ':>8} {'95% CI':<18}{'vs blind':>9}"
    if two:
        head += f"{'APGR':>8} {'95% CI':<18}{'vs blind':>9}{'CPT50':>8}"
    print(head + f"{'fallback':>10}")
    for router, v in rep.items():
        vb = v.get("vs_blind", {})
        line = f"  {router:<34}{num(v, 'aiq', '.4f'):>8} {ci_s(v, 'aiq'):<18}"
        line += f"{'' if 'aiq' not in vb else format(vb['aiq'][0], '+.4f'):>9}"
        if two:
            line += f"{num(v, 'apgr', '.3f'):>8} {ci_s(v, 'apgr'):<18}"
            line += f"{'' if 'apgr' not in vb else format(vb['apgr'][0], '+.3f'):>9}"
            line += f"{'-' if v.get('cpt50') is None else format(v['cpt50'], '.1%'):>8}"
        fb = v.get("fallback_rate")
        print(line + f"{'' if fb is None else format(fb, '.0%'):>10}")
    if "folds" in rep.get("knn", {}):
        metric = "apgr" if two else "aiq"
        print(f"  per fold ({metric}): " + "; ".join(
            f"{fold}: " + ", ".join(f"{r} {rep[r]['folds'][fold][metric]:.3f}" for r in ("knn", "cost-quality",
                                                                                         "random"))
            for fold in rep["knn"]["folds"]))


def plot_curves(report: dict[str, dict], path: Path) -> str | None:
    """The random split. Two-model data: quality against the share of strong calls (RouteLLM's view, the curves
    APGR integrates); multi-model data: quality against mean cost, each router's non-decreasing hull (what AIQ
    integrates). Linear axes, so a straight segment is the mix of its two ends."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(report), figsize=(6.5 * len(report), 4.8), squeeze=False)
    for ax, (name, rep) in zip(axes[0], report.items(), strict=True):
        two = any("apgr" in v for v in rep.values())
        for router, v in rep.items():
            pts = np.array(v["points"])
            if router.startswith("single:"):
                x = [v.get("share", 0.0) * 100] if two else pts[:, 0] * 1000
                ax.scatter(x, pts[:, 1], marker="s", s=22, color="grey", zorder=3)
                ax.annotate(router.removeprefix("single:").split("/")[-1], (x[0], pts[0, 1]), fontsize=6,
                            color="grey")
                continue
            if router == "random-line" or "(no fallback)" in router:
                continue
            style = {"linestyle": "--" if router in ("random", "oracle") else "-",
                     "linewidth": 2.2 if router in ("knn", "cost-quality") else 1.2}
            if two:
                strong_q = next(r["points"][0][1] for k, r in rep.items() if k.startswith("single:")
                                and r.get("share") == 1.0)
                weak_q = next(r["points"][0][1] for k, r in rep.items() if k.startswith("single:")
                              and r.get("share") == 0.0)
                share, qual = close_two_model(v["strong_share"], list(pts[:, 1]), weak_q, strong_q,
                                              router == "oracle")
                order = np.lexsort((qual, share))
                ax.plot(np.array(share)[order] * 100, np.array(qual)[order], marker=".", markersize=3,
                        label=f"{router} (APGR {v['apgr']:.3f})", **style)
            else:
                h = nondecreasing_hull(pts)
                ax.plot(h[:, 0] * 1000, h[:, 1], marker=".", label=f"{router} (AIQ {v['aiq']:.3f})", **style)
        ax.set_title(f"{name} (random split, test)")
        ax.set_xlabel("strong-model calls (%)" if two else "mean cost per 1,000 queries (USD)")
        ax.set_ylabel("mean quality")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
