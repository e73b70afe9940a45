"""cost-quality and knn: order candidates by predicted quality - lambda x predicted cost.

Cost basis "absolute" (default): cost in USD and lambda in quality points per USD per request (the CRD's
`lambda`): 0 orders by quality alone, a large value by cost alone, and a long prompt (dearer everywhere) leans
cheaper than a short one. Cost basis "relative": each candidate's cost as a share of the request's most
expensive candidate, so lambda (quality points per full price) trades quality against price ratios whatever
the prompt's length — the right basis when what is budgeted is the share of calls to the dear model.

Either lambda is set directly or a target quality share t in (0, 1] is translated into one on
the training data: the largest lambda (on a geometric grid) whose routed mean quality on the dataset, with
out-of-sample predictions (kNN: leave-one-out; linear heads: 2-fold cross-fitting), is at least t x the mean
quality of the best single candidate. Because costs depend on the candidates' prices, the translation is made
per candidate set (`prepare(candidates)`, memoised; the first rank() does it if prepare was not called).

Predicted cost = the candidate's price x (the request's input tokens, and its output tokens as the estimator
predicts them for that model — the neighbours' mean for kNN, the dataset mean for the heads — or the
request's expected output tokens where the estimator has no figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from switchpoint.router.selectors.base import (
    COST_BASES,
    CandidateModel,
    CandidateScore,
    Ranking,
    SelectionRequest,
    SelectorError,
    candidate_costs,
    candidate_prices,
    check_candidates,
    check_lambda,
    costs_at,
    decision_costs,
    first_choice,
    order_of,
    ranking,
)
from switchpoint.router.selectors.dataset import OnMissing, RoutingDataset, load_dataset
from switchpoint.router.selectors.estimators import (
    Estimate,
    Estimator,
    KnnEstimator,
    LinearEstimator,
    MeanEstimator,
    UnknownModel,
)
from switchpoint.router.selectors.guard import (
    OFF,
    GuardParams,
    blind_draw,
    default_guard,
    draw,
    fallback_order,
    margins,
    pick_shares,
    unsure,
)
from switchpoint.router.selectors.index import KnnIndex, TextEncoder, embed_dataset, stride_sample
from switchpoint.router.selectors.registry import SelectionAlgorithm, SelectorSettings, register

CostBasis = Literal["absolute", "relative"]
LAMBDA_GRID_POINTS = 121


@dataclass(frozen=True)
class CostQualityParams:
    """cost-quality: estimator "linear" (logistic heads on embeddings; needs dataset + encoder) or "mean"
    (each model's dataset mean: the same choice for every prompt)."""

    lam: float | None = None
    target_quality_share: float | None = None
    dataset: str | None = None
    estimator: Literal["linear", "mean"] = "linear"
    l2: float = 1e-3
    cost_basis: CostBasis = "absolute"
    unknown_model: UnknownModel = "error"
    prior_quality: float | None = None
    on_missing: OnMissing = "error"
    guard: GuardParams | None = None  # None: default_guard on the labelled data; GuardParams(): no fallback

    def __post_init__(self) -> None:
        _check_tradeoff(self.lam, self.target_quality_share)
        _check_basis(self.cost_basis)
        if self.estimator not in ("linear", "mean"):
            raise SelectorError(f"estimator must be 'linear' or 'mean', not {self.estimator!r}")
        if self.dataset is None:
            raise SelectorError("cost-quality needs a dataset (labelled prompts) to predict quality from")
        _check_prior(self.prior_quality)
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise SelectorError(f"l2 must be a finite number >= 0, got {self.l2!r}")


@dataclass(frozen=True)
class KnnParams:
    dataset: str
    k: int = 10
    lam: float | None = None
    target_quality_share: float | None = None
    temperature: float = 0.0  # softmax temperature on cosine similarity; 0 = uniform weights
    prior_strength: float = 0.0  # pseudo-neighbours pulling toward each model's dataset mean
    cost_basis: CostBasis = "absolute"
    unknown_model: UnknownModel = "error"
    prior_quality: float | None = None
    on_missing: OnMissing = "error"
    guard: GuardParams | None = None  # None: default_guard on the labelled data; GuardParams(): no fallback
    lists: int | None = None  # the index's inverted-file lists (KnnIndex): None its size rule, 0 score every row

    def __post_init__(self) -> None:
        _check_basis(self.cost_basis)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise SelectorError(f"k must be an integer >= 1, got {self.k!r}")
        _check_tradeoff(self.lam, self.target_quality_share)
        if not self.dataset:
            raise SelectorError("knn needs a dataset (labelled prompts) to build its index from")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SelectorError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (math.isfinite(self.prior_strength) and self.prior_strength >= 0):
            raise SelectorError(f"prior_strength must be a finite number >= 0, got {self.prior_strength!r}")
        _check_prior(self.prior_quality)
        if self.lists is not None and (isinstance(self.lists, bool) or not isinstance(self.lists, int)
                                       or self.lists < 0):
            raise SelectorError(f"lists must be an integer >= 0 (0: score every row), got {self.lists!r}")


def _check_tradeoff(lam: float | None, share: float | None) -> None:
    if lam is not None and share is not None:
        raise SelectorError("set lambda or target_quality_share, not both")
    if lam is not None:
        check_lambda(lam)
    if share is not None and not (isinstance(share, int | float) and 0 < share <= 1):
        raise SelectorError(f"target_quality_share must be in (0, 1], got {share!r}")


def _check_basis(basis: str) -> None:
    if basis not in COST_BASES:
        raise SelectorError(f"cost_basis must be one of {', '.join(COST_BASES)}, not {basis!r}")


def _check_prior(prior: float | None) -> None:
    if prior is not None and not (math.isfinite(prior) and 0 <= prior <= 1):
        raise SelectorError(f"prior_quality must be in [0, 1], got {prior!r}")


def lambda_grid(costs: np.ndarray, points: int = LAMBDA_GRID_POINTS) -> np.ndarray:
    """0 then a geometric grid spanning the scale 1 / (typical cost gap between candidates) by 1e-3 .. 1e4."""
    spread = costs.max(axis=1) - costs.min(axis=1)
    gap = float(np.median(spread[spread > 0])) if np.any(spread > 0) else 1.0
    return np.concatenate([[0.0], np.geomspace(1e-3 / gap, 1e4 / gap, points - 1)])


def lambda_for_share(quality: np.ndarray, cost: np.ndarray, true_quality: np.ndarray, share: float) -> float:
    """The largest grid lambda whose routed mean true quality >= share x the best single column's mean.

    quality, cost: (n, m) out-of-sample predictions and predicted costs; true_quality: (n, m) the labels.
    lambda = 0 when even 0 misses the target (the best the predictions can do).
    """
    target = share * float(true_quality.mean(axis=0).max())
    best = 0.0
    rows = np.arange(quality.shape[0])
    for lam in lambda_grid(cost):
        pick = first_choice(quality, cost, float(lam))
        if true_quality[rows, pick].mean() >= target - 1e-12:
            best = float(lam)
    return best


CALIBRATION_ROWS = 2000  # labelled rows (a fixed stride sample) for the share translation and the fallback


@dataclass
class Calibration:
    """Out-of-sample predictions on (a sample of) the labelled data for one candidate set."""

    quality: np.ndarray  # (n, m)
    cost: np.ndarray  # (n, m) the decision's cost (its basis)
    truth: np.ndarray  # (n, m) the labels
    similarity: np.ndarray | None  # (n,) each row's similarity to its nearest other labelled prompt


@dataclass
class CandidateSet:
    """What rank() needs of one candidate set besides the request: its models (as the estimator knows them) and
    prices, made when the set is first seen; the lambda a target share gives and the fallback's shares, filled on
    the first rank()."""

    models: tuple[str, ...]
    prices: tuple[np.ndarray, np.ndarray]  # candidate_prices
    lam: float | None = None
    shares: np.ndarray | None = None


class CostQualitySelector:
    """Argmax of predicted quality - lambda x predicted cost, over any Estimator (knn and cost-quality), with the
    do-no-harm fallback of guard.py when `guard` is active."""

    def __init__(self, estimator: Estimator, lam: float | None = None, target_quality_share: float | None = None,
                 algorithm: str = "cost-quality", calibration: tuple[RoutingDataset, np.ndarray | None] | None = None,
                 calibration_estimate: Estimate | None = None, cost_basis: CostBasis = "absolute",
                 guard: GuardParams = OFF, coverage: KnnIndex | None = None):
        _check_tradeoff(lam, target_quality_share)
        _check_basis(cost_basis)
        self.cost_basis = cost_basis
        if lam is None and target_quality_share is None:
            lam = 0.0
        if target_quality_share is not None and calibration is None:
            raise SelectorError("a target quality share needs the training dataset to translate it into lambda")
        if guard.active and calibration is None:
            raise SelectorError("the fallback needs the training dataset to find its static shares")
        self.algorithm = algorithm
        self.estimator = estimator
        self.lam = lam
        self.share = target_quality_share
        self.calibration = calibration
        self._calib_estimate = calibration_estimate
        self.guard = guard
        self.coverage = coverage  # labelled prompts to measure a request's distance from (knn: its own index)
        self._lams: dict[tuple[CandidateModel, ...], float] = {}
        self._shares: dict[tuple[CandidateModel, ...], np.ndarray] = {}
        self._calibrations: dict[tuple[CandidateModel, ...], Calibration] = {}
        self._sets: dict[tuple[CandidateModel, ...], CandidateSet] = {}

    def candidate_set(self, candidates: Sequence[CandidateModel]) -> CandidateSet:
        """The candidate set, checked, with its models and prices, made once per set (by value: the router
        builds a new tuple of equal candidates per request). A set that fails the check raises every time."""
        key = tuple(candidates)
        found = self._sets.get(key)
        if found is None:
            check_candidates(key)
            found = self._sets[key] = CandidateSet(tuple(c.model for c in key), candidate_prices(key))
        return found

    # -- the decision, shared by rank() and the benchmark harness --------------------------------------
    def estimate_batch(self, candidates: Sequence[CandidateModel], embeddings: np.ndarray | None,
                       input_tokens: np.ndarray, output_tokens: np.ndarray,
                       exclude: np.ndarray | None = None) -> tuple[Estimate, np.ndarray]:
        """(estimate, predicted cost (n, m)) for a batch of requests; output_tokens (n,) is the requests' own
        expectation, used where the estimator has no figure for a model."""
        return self._estimate(self.candidate_set(candidates), embeddings, input_tokens, output_tokens, exclude)

    def _estimate(self, cs: CandidateSet, embeddings: np.ndarray | None, input_tokens: np.ndarray,
                  output_tokens: np.ndarray, exclude: np.ndarray | None = None) -> tuple[Estimate, np.ndarray]:
        est = self.estimator.estimate(embeddings, cs.models, exclude)
        if est.similarity is None and self.coverage is not None and embeddings is not None:
            emb = embeddings[None, :] if embeddings.ndim == 1 else embeddings
            est.similarity = self.coverage.similarities(emb).max(axis=1).astype(np.float64)
        return est, priced_at(cs.prices, est, input_tokens, output_tokens)

    def choose_batch(self, quality: np.ndarray, weighed: np.ndarray, lam: float, similarity: np.ndarray | None,
                     request_ids: Sequence[str], shares: np.ndarray | None,
                     uniforms: np.ndarray | None = None,
                     first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(first choice (n,), fell back (n,) bool): quality - lam x weighed cost, or, where the guard does not
        trust the estimate, a draw at the static shares (the fallback of guard.py). uniforms: the requests'
        hash_uniforms(request_ids), when the caller has them already (the benchmark's sweeps); first: the
        first_choice of the same inputs, when the caller has it (rank(): the head of its order_of)."""
        pick = first_choice(quality, weighed, lam) if first is None else first
        if not self.guard.active or shares is None:
            return pick, np.zeros(len(pick), dtype=bool)
        doubt = unsure(self.guard, similarity, quality - lam * weighed if self.guard.min_margin > 0 else None,
                       len(pick))
        if doubt.any():
            rows = np.nonzero(doubt)[0]
            pick = pick.copy()
            pick[rows] = blind_draw([request_ids[i] for i in rows], shares) if uniforms is None \
                else draw(uniforms[rows], shares)
        return pick, doubt

    def lambda_for(self, candidates: Sequence[CandidateModel]) -> float:
        if self.lam is not None:
            return self.lam
        key = tuple(candidates)
        if key not in self._lams:
            c = self._calibration(candidates)
            self._lams[key] = lambda_for_share(c.quality, c.cost, c.truth, self.share)  # type: ignore[arg-type]
        return self._lams[key]

    def shares_for(self, candidates: Sequence[CandidateModel]) -> np.ndarray:
        """The fallback's static shares: the candidates' shares of this selector's own (out-of-sample) picks on
        its labelled data at the lambda in force."""
        key = tuple(candidates)
        if key not in self._shares:
            c = self._calibration(candidates)
            self._shares[key] = pick_shares(first_choice(c.quality, c.cost, self.lambda_for(candidates)),
                                            len(candidates))
        return self._shares[key]

    def prepare(self, candidates: Sequence[CandidateModel]) -> float:
        """Call when a policy is loaded: checks the candidates (a model the dataset does not know raises
        SelectorError unless unknown_model is "prior") and makes the target-share calibration and the fallback's
        shares now, not on the first request. Returns the lambda in force for these candidates."""
        check_candidates(candidates)
        self.estimator.estimate(None, [c.model for c in candidates])
        lam = self.lambda_for(candidates)
        if self.guard.active:
            self.shares_for(candidates)
        return lam

    def _calibration(self, candidates: Sequence[CandidateModel]) -> Calibration:
        key = tuple(candidates)
        if key not in self._calibrations:
            self._calibrations[key] = self._calibrate(candidates)
        return self._calibrations[key]

    def _calibrate(self, candidates: Sequence[CandidateModel]) -> Calibration:
        assert self.calibration is not None
        data, emb = self.calibration
        rows = calibration_rows(len(data))
        cols = [data.model_index(c.model) for c in candidates]
        prior = getattr(self.estimator, "prior", float(data.scores.mean()))
        similarity = None
        if self._calib_estimate is not None:  # cross-fitted head predictions, one column per dataset model
            ce = self._calib_estimate
            quality = np.stack([ce.quality[rows, c] if c is not None else np.full(len(rows), prior) for c in cols], 1)
            out = np.stack([ce.output_tokens[rows, c] if c is not None else np.full(len(rows), np.nan)
                            for c in cols], 1)
        else:
            loo = rows if isinstance(self.estimator, KnnEstimator) else None
            est = self.estimator.estimate(None if emb is None else emb[rows], [c.model for c in candidates], loo)
            shape = (len(rows), len(candidates))  # the mean estimator answers one row for all
            quality, out = np.broadcast_to(est.quality, shape), np.broadcast_to(est.output_tokens, shape)
            similarity = est.similarity
        out = np.where(np.isnan(out), data.output_tokens.mean(), out)
        cost = decision_costs(candidate_costs(candidates, data.input_tokens[rows], out), self.cost_basis)
        truth = np.stack([data.scores[rows, c] if c is not None else np.full(len(rows), prior) for c in cols], axis=1)
        return Calibration(quality, cost, truth, similarity)

    def rank(self, candidates: Sequence[CandidateModel], request: SelectionRequest) -> Ranking:
        """estimate_batch and choose_batch on one request (what the benchmark harness batches), ordered by order_of.

        A request's decision works on 2-9 candidates, where numpy's per-call overhead (microseconds) costs more
        than the arithmetic: the order and the evidence are made from plain floats, the candidate set's checks,
        prices, lambda and fallback shares are looked up once (candidate_set)."""
        cs = self.candidate_set(candidates)
        if self.lam is None and cs.lam is None:  # a target share: translated once per candidate set
            cs.lam = self.lambda_for(candidates)
        lam = self.lam if self.lam is not None else cs.lam
        assert lam is not None
        if self.guard.active and cs.shares is None:
            cs.shares = self.shares_for(candidates)
        emb = None if request.embedding is None else np.asarray(request.embedding)[None, :]
        est, cost = self._estimate(cs, emb, np.array([request.input_tokens]), np.array([request.output_tokens]))
        weighed = decision_costs(cost, self.cost_basis)
        quality, usd, known = est.quality[0].tolist(), cost[0].tolist(), est.known.tolist()
        w_row = usd if self.cost_basis == "absolute" else weighed[0].tolist()
        score = [q - lam * w for q, w in zip(quality, w_row, strict=True)]
        order = order_of(score, w_row)
        fell_back = False
        if self.guard.active:
            first, doubt = self.choose_batch(est.quality[:1], weighed, lam, est.similarity, [request.request_id],
                                             cs.shares, first=np.array(order[:1]))
            fell_back = bool(doubt[0])
            if fell_back:
                order = fallback_order(int(first[0]), len(candidates))
        scores = {i: CandidateScore(c.key, c.model, quality[i], usd[i], score[i], known[i])
                  for i, c in enumerate(candidates)}
        notes = []
        if fell_back:
            notes.append(self._fallback_note(candidates, est.similarity, est.quality[:1] - lam * weighed, cs.shares))
        if emb is None and self.estimator.name != "mean":
            notes.append("no request embedding: the dataset's mean quality per model")
        if not all(known):
            unknown = [c.model for c, k in zip(candidates, known, strict=True) if not k]
            notes.append(f"not in the dataset (prior quality): {', '.join(unknown)}")
        if self.share is not None:
            notes.append(f"lambda from target quality share {self.share}")
        if self.cost_basis != "absolute":
            notes.append(f"cost basis {self.cost_basis}")
        return ranking(self.algorithm, candidates, order, scores, lam=lam,
                       neighbours=est.neighbours[0] if est.neighbours else (), notes=tuple(notes),
                       fallback=fell_back)

    def _fallback_note(self, candidates: Sequence[CandidateModel], similarity: np.ndarray | None,
                       score: np.ndarray, shares: np.ndarray | None) -> str:
        why = []
        if similarity is not None and similarity[0] < self.guard.min_similarity:
            why.append(f"nearest labelled prompt at cosine {similarity[0]:.3f} < {self.guard.min_similarity:.3f}")
        lead = float(margins(score)[0])
        if lead < self.guard.min_margin:
            why.append(f"lead {lead:.3f} < {self.guard.min_margin:.3f}")
        mix = ", ".join(f"{c.key} {s:.0%}" for c, s in zip(candidates, [] if shares is None else shares, strict=False))
        return f"fallback ({'; '.join(why)}): declared order, first drawn at the static shares ({mix})"


def priced(candidates: Sequence[CandidateModel], est: Estimate, input_tokens: np.ndarray,
           output_tokens: np.ndarray) -> np.ndarray:
    """(n, m) predicted USD: the estimate's output tokens per model, the requests' own where it has none."""
    return priced_at(candidate_prices(candidates), est, input_tokens, output_tokens)


def priced_at(prices: tuple[np.ndarray, np.ndarray], est: Estimate, input_tokens: np.ndarray,
              output_tokens: np.ndarray) -> np.ndarray:
    """priced() at a candidate set's candidate_prices."""
    out = est.output_tokens
    unknown = np.isnan(out)
    if unknown.any():
        out = np.where(unknown, np.asarray(output_tokens, dtype=np.float64).reshape(-1, 1), out)
    return costs_at(prices, np.asarray(input_tokens).reshape(-1), out)


def calibration_rows(n: int, limit: int = CALIBRATION_ROWS) -> np.ndarray:
    return stride_sample(n, limit)


def load_labelled(dataset: str | Path, encoder: TextEncoder | None, cache_dir: Path | None,
                  on_missing: OnMissing) -> tuple[RoutingDataset, np.ndarray | None]:
    data = load_dataset(dataset, on_missing)
    emb = embed_dataset(data, encoder, cache_dir) if encoder is not None else None
    return data, emb


def knn_selector(params: KnnParams, encoder: TextEncoder, cache_dir: Path | None = None) -> CostQualitySelector:
    """The knn algorithm: the index is the dataset's prompts embedded by `encoder` (cached on disk)."""
    data, emb = load_labelled(params.dataset, encoder, cache_dir, params.on_missing)
    assert emb is not None
    index = KnnIndex.from_dataset(data, emb, encoder.name, params.lists)
    est = KnnEstimator(index, params.k, params.temperature, params.prior_strength, params.unknown_model,
                       params.prior_quality)
    guard = own_guard(index) if params.guard is None else params.guard
    return CostQualitySelector(est, params.lam, params.target_quality_share, "knn", (data, emb),
                               cost_basis=params.cost_basis, guard=guard)


def own_guard(index: KnnIndex) -> GuardParams:
    """default_guard from the indexed prompts' similarity to their nearest other (a fixed sample of them)."""
    if len(index.ids) < 2:
        return OFF
    rows = calibration_rows(len(index.ids))
    _, sims = index.neighbours(index.embeddings[rows], 1, rows)
    return default_guard(sims[:, 0])


def coverage_index(data: RoutingDataset, emb: np.ndarray, encoder: str) -> KnnIndex:
    """A fixed sample of the labelled prompts to measure a request's distance from (the heads have no index)."""
    rows = calibration_rows(len(data))
    return KnnIndex.from_dataset(data.take(rows), emb[rows], encoder)


def cost_quality_selector(params: CostQualityParams, encoder: TextEncoder | None,
                          cache_dir: Path | None = None) -> CostQualitySelector:
    assert params.dataset is not None
    if params.estimator == "mean":
        data = load_dataset(params.dataset, params.on_missing)
        est: Estimator = MeanEstimator(data, params.unknown_model, params.prior_quality)
        return CostQualitySelector(est, params.lam, params.target_quality_share, "cost-quality", (data, None),
                                   cost_basis=params.cost_basis)
    if encoder is None:
        raise SelectorError("cost-quality with the linear estimator needs the router's encoder")
    data, emb = load_labelled(params.dataset, encoder, cache_dir, params.on_missing)
    assert emb is not None
    est = LinearEstimator.fit(data, emb, params.l2, unknown_model=params.unknown_model,
                              prior_quality=params.prior_quality)
    calib = None
    if params.target_quality_share is not None:  # 2-fold cross-fitted predictions for the translation
        calib = cross_fitted_linear(data, emb, params.l2)
    coverage = coverage_index(data, emb, encoder.name)
    guard = own_guard(coverage) if params.guard is None else params.guard
    return CostQualitySelector(est, params.lam, params.target_quality_share, "cost-quality", (data, emb), calib,
                               params.cost_basis, guard, coverage)


def cross_fitted_linear(data: RoutingDataset, emb: np.ndarray, l2: float, folds: int = 2) -> Estimate:
    """Out-of-sample head predictions for every row of `data` (each fold predicted by heads fit on the rest)."""
    fold = np.arange(len(data)) % folds
    q = np.empty(data.scores.shape)
    for f in range(folds):
        tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        heads = LinearEstimator.fit(data.take(tr), emb[tr], l2)
        q[te] = heads.estimate(emb[te], data.models).quality
    out = np.tile(data.output_tokens.mean(axis=0).astype(np.float64), (len(data), 1))
    return Estimate(q, out, np.ones(len(data.models), dtype=bool))


def _build_knn(s: SelectorSettings) -> CostQualitySelector:
    if s.dataset is None:
        raise SelectorError("knn needs a dataset (labelled prompts) to build its index from")
    if s.encoder is None:
        raise SelectorError("knn needs the router's encoder to embed its dataset and the requests")
    params = KnnParams(dataset=str(s.dataset), k=s.k, lam=s.lam, target_quality_share=s.target_quality_share,
                       cost_basis=s.cost_basis, unknown_model=s.unknown_model)  # type: ignore[arg-type]
    return knn_selector(params, s.encoder, s.cache_dir)


def _build_cost_quality(s: SelectorSettings) -> CostQualitySelector:
    params = CostQualityParams(lam=s.lam, target_quality_share=s.target_quality_share,
                               dataset=None if s.dataset is None else str(s.dataset),
                               estimator="linear" if s.encoder is not None else "mean", cost_basis=s.cost_basis,
                               unknown_model=s.unknown_model)  # type: ignore[arg-type]
    return cost_quality_selector(params, s.encoder, s.cache_dir)


register(SelectionAlgorithm("cost-quality", _build_cost_quality, needs_embedding=True))
register(SelectionAlgorithm("knn", _build_knn, needs_embedding=True))
