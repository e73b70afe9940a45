"""Per-model quality (and output length) predictions for a batch of prompts.

Three estimators, one shape (`estimate(embeddings, models) -> Estimate`):
- MeanEstimator: each model's mean score on the dataset (ignores the prompt).
- KnnEstimator: the k most similar labelled prompts by cosine, weighted by softmax(similarity / temperature)
  (temperature 0: uniform), shrunk toward the model's dataset mean by `prior_strength` pseudo-neighbours.
- LinearEstimator: one logistic regression per model on the embedding (numpy, L2-regularised, full-batch Adam).

A model the dataset does not know: unknown_model="error" raises SelectorError naming it and the models the
dataset has; "prior" predicts `prior_quality` (default: the dataset's mean score over all models) and marks
it unknown, so the evidence flags it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from switchpoint.router.selectors.base import Neighbour, SelectorError
from switchpoint.router.selectors.dataset import RoutingDataset
from switchpoint.router.selectors.index import KnnIndex, normalise

UnknownModel = Literal["error", "prior"]
CHUNK = 512  # query rows per similarity matmul: bounds memory at CHUNK x N floats


@dataclass
class Estimate:
    quality: np.ndarray  # (n, m) predicted quality in [0, 1], per requested model
    output_tokens: np.ndarray  # (n, m) predicted output tokens; NaN where the estimator has no idea
    known: np.ndarray  # (m,) bool: the model is in the estimator's data
    neighbours: list[tuple[Neighbour, ...]] = field(default_factory=list)  # per row (kNN only)
    similarity: np.ndarray | None = None  # (n,) cosine to the nearest labelled prompt; None when not measured


class Estimator(Protocol):
    name: str
    models: tuple[str, ...]

    def estimate(self, embeddings: np.ndarray | None, models: Sequence[str],
                 exclude: np.ndarray | None = None) -> Estimate: ...


def _columns(known_models: tuple[str, ...], models: Sequence[str], unknown: UnknownModel,
             source: str) -> tuple[list[int | None], np.ndarray]:
    cols: list[int | None] = []
    for m in models:
        cols.append(known_models.index(m) if m in known_models else None)
    missing = [m for m, c in zip(models, cols, strict=True) if c is None]
    if missing and unknown == "error":
        raise SelectorError(f"model(s) {', '.join(missing)} not in {source} (it has: {', '.join(known_models)}); "
                            "map the candidate to a dataset model or set unknownModel: prior")
    return cols, np.array([c is not None for c in cols])


def _check_unknown(unknown: str) -> None:
    if unknown not in ("error", "prior"):
        raise SelectorError(f"unknown_model must be 'error' or 'prior', not {unknown!r}")


class MeanEstimator:
    name = "mean"

    def __init__(self, dataset: RoutingDataset, unknown_model: UnknownModel = "error",
                 prior_quality: float | None = None):
        _check_unknown(unknown_model)
        self.models = dataset.models
        self.source = str(dataset.path)
        self.mean = dataset.scores.mean(axis=0)
        self.out = dataset.output_tokens.mean(axis=0).astype(np.float64)
        self.unknown = unknown_model
        self.prior = float(dataset.scores.mean()) if prior_quality is None else prior_quality

    def estimate(self, embeddings: np.ndarray | None, models: Sequence[str],
                 exclude: np.ndarray | None = None) -> Estimate:
        n = 1 if embeddings is None else (embeddings.shape[0] if embeddings.ndim == 2 else 1)
        cols, known = _columns(self.models, models, self.unknown, self.source)
        q = np.array([self.mean[c] if c is not None else self.prior for c in cols])
        o = np.array([self.out[c] if c is not None else np.nan for c in cols])
        return Estimate(np.tile(q, (n, 1)), np.tile(o, (n, 1)), known)


class KnnEstimator:
    name = "knn"

    def __init__(self, index: KnnIndex, k: int = 10, temperature: float = 0.0, prior_strength: float = 0.0,
                 unknown_model: UnknownModel = "error", prior_quality: float | None = None,
                 evidence_neighbours: int = 5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SelectorError(f"k must be an integer >= 1, got {k!r}")
        if not temperature >= 0:
            raise SelectorError(f"temperature must be >= 0 (0: uniform weights), got {temperature!r}")
        if not prior_strength >= 0:
            raise SelectorError(f"prior_strength must be >= 0, got {prior_strength!r}")
        _check_unknown(unknown_model)
        self.index, self.k, self.temperature, self.prior_strength = index, k, temperature, prior_strength
        self.models = index.models
        self.unknown = unknown_model
        self.mean = index.scores.mean(axis=0)
        self.prior = float(index.scores.mean()) if prior_quality is None else prior_quality
        self.evidence_neighbours = evidence_neighbours
        self._columns: dict[tuple[str, ...], tuple[list[int | None], np.ndarray]] = {}

    def weights(self, sims: np.ndarray) -> np.ndarray:
        """(n, k) neighbour weights summing to 1 per row."""
        if self.temperature == 0:
            w = np.ones_like(sims, dtype=np.float64)
        else:
            w = np.exp((sims - sims[:, :1]) / self.temperature).astype(np.float64)  # sims sorted: col 0 is max
        return w / w.sum(axis=1, keepdims=True)

    def estimate(self, embeddings: np.ndarray | None, models: Sequence[str],
                 exclude: np.ndarray | None = None) -> Estimate:
        cols, known = self.columns(models)
        if embeddings is None:  # no encoder output: the dataset means, said in the evidence by the selector
            q = np.array([self.mean[c] if c is not None else self.prior for c in cols])[None, :]
            o = np.array([self.index.output_tokens[:, c].mean() if c is not None else np.nan for c in cols])[None, :]
            return Estimate(q, o, known)
        emb = embeddings[None, :] if embeddings.ndim == 1 else embeddings
        if emb.shape[0] <= CHUNK:
            return self.estimate_neighbours(*self.index.neighbours(emb, self.k, exclude), cols, known)
        parts = [self.estimate_neighbours(*self.index.neighbours(emb[s:s + CHUNK], self.k,
                                                                  None if exclude is None else exclude[s:s + CHUNK]),
                                          cols, known)
                 for s in range(0, emb.shape[0], CHUNK)]
        if len(parts) == 1:
            return parts[0]
        return Estimate(np.concatenate([p.quality for p in parts]), np.concatenate([p.output_tokens for p in parts]),
                        known, [], np.concatenate([p.similarity for p in parts if p.similarity is not None]))

    def estimate_neighbours(self, idx: np.ndarray, sims: np.ndarray, cols: list[int | None],
                            known: np.ndarray) -> Estimate:
        """The estimate from given neighbours (idx, sims: (n, >= 1) most similar first; only the first k used).

        estimate() calls it on the index's answer; the benchmark's tuning calls it on neighbours found once at
        the largest k of its grid, so every k it scores is this same code. One gather of the neighbours' labels
        (scores and output tokens side by side), one mean (uniform weights) or matmul (softmax) over them."""
        idx, sims = idx[:, :self.k], sims[:, :self.k]
        n, kk, m = idx.shape[0], idx.shape[1], len(self.models)
        w = None if self.temperature == 0 else self.weights(sims)
        labels = np.take(self.index.labels, idx, axis=0)  # (n, k, 2M)
        mixed = labels.sum(axis=1) / kk if w is None else np.matmul(w[:, None, :], labels)[:, 0, :]
        a = self.prior_strength
        quality = mixed[:, :m] if a == 0 else (kk * mixed[:, :m] + a * self.mean) / (kk + a)
        out = mixed[:, m:]
        if cols != list(range(m)):  # a subset, another order or unknown models: one column per requested model
            kc = [c if c is not None else 0 for c in cols]
            quality = np.where(known, quality[:, kc], self.prior)
            out = np.where(known, out[:, kc], np.nan)
        neighbours: list[tuple[Neighbour, ...]] = []
        if n <= 8:  # evidence only for the router's single requests, not the benchmark's batches
            top = min(self.evidence_neighbours, kk)
            ids = self.index.ids
            neighbours = [tuple(Neighbour(ids[i], round(si, 4))
                                for i, si in zip(idx[r, :top].tolist(), sims[r, :top].tolist(), strict=True))
                          for r in range(n)]
        return Estimate(quality, out, known, neighbours, sims[:, 0].astype(np.float64))

    def columns(self, models: Sequence[str]) -> tuple[list[int | None], np.ndarray]:
        key = tuple(models)
        if key not in self._columns:
            source = f"the kNN dataset {self.index.digest[:12]}"
            self._columns[key] = _columns(self.models, models, self.unknown, source)
        return self._columns[key]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LinearEstimator:
    """P(a model answers well | prompt) = sigmoid(w_m . [embedding, 1]); trained on the dataset's scores."""

    name = "linear"

    def __init__(self, weights: np.ndarray, models: tuple[str, ...], out_tokens: np.ndarray, prior: float,
                 unknown_model: UnknownModel = "error", source: str = "the dataset"):
        _check_unknown(unknown_model)
        self.w = weights  # (d + 1, M)
        self.models = models
        self.out = out_tokens
        self.prior = prior
        self.unknown = unknown_model
        self.source = source

    @classmethod
    def fit(cls, dataset: RoutingDataset, embeddings: np.ndarray, l2: float = 1e-3, steps: int = 400,
            lr: float = 0.05, unknown_model: UnknownModel = "error", prior_quality: float | None = None,
            seed: int = 0) -> LinearEstimator:
        """Full-batch Adam on the mean cross-entropy + l2/2 |w|^2 (bias not penalised); fractional scores are
        soft labels. Deterministic for a given dataset, embeddings and seed."""
        if len(dataset) == 0:
            raise SelectorError("cannot fit the quality heads: the dataset is empty")
        if not l2 >= 0:
            raise SelectorError(f"l2 must be >= 0, got {l2!r}")
        x = np.hstack([normalise(embeddings).astype(np.float64), np.ones((len(dataset), 1))])
        y = dataset.scores
        n, d = x.shape
        rng = np.random.default_rng(seed)
        w = rng.normal(0, 1e-3, (d, y.shape[1]))
        base = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
        w[-1] = np.log(base / (1 - base))
        mom, vel = np.zeros_like(w), np.zeros_like(w)
        pen = np.ones((d, 1))
        pen[-1] = 0.0
        for t in range(1, steps + 1):
            p = _sigmoid(x @ w)
            g = x.T @ (p - y) / n + l2 * pen * w
            mom = 0.9 * mom + 0.1 * g
            vel = 0.999 * vel + 0.001 * g * g
            w -= lr * (mom / (1 - 0.9**t)) / (np.sqrt(vel / (1 - 0.999**t)) + 1e-8)
        prior = float(dataset.scores.mean()) if prior_quality is None else prior_quality
        return cls(w, dataset.models, dataset.output_tokens.mean(axis=0).astype(np.float64), prior, unknown_model,
                   str(dataset.path))

    def estimate(self, embeddings: np.ndarray | None, models: Sequence[str],
                 exclude: np.ndarray | None = None) -> Estimate:
        cols, known = _columns(self.models, models, self.unknown, self.source)
        if embeddings is None:
            z = np.tile(self.w[-1], (1, 1))
        else:
            emb = embeddings[None, :] if embeddings.ndim == 1 else embeddings
            if emb.shape[1] + 1 != self.w.shape[0]:
                raise SelectorError(f"the request embedding has {emb.shape[1]} dimensions; the quality heads were "
                                    f"trained on {self.w.shape[0] - 1}: use the same encoder")
            z = normalise(emb).astype(np.float64) @ self.w[:-1] + self.w[-1]
        p = _sigmoid(z)
        q = np.stack([p[:, c] if c is not None else np.full(p.shape[0], self.prior) for c in cols], axis=1)
        o = np.tile(np.array([self.out[c] if c is not None else np.nan for c in cols]), (p.shape[0], 1))
        return Estimate(q, o, known)
