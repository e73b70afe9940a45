"""Prompt embeddings of a routing dataset, cached on disk, and the kNN index built from them.

Cache key: the dataset file's SHA-256, the encoder's name and a digest of the row ids loaded (rows skipped
for missing models change it). A cache file that does not match (shape, ids digest) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from switchpoint.router.selectors.base import DatasetError, SelectorError
from switchpoint.router.selectors.dataset import RoutingDataset

CACHE_ENV = "SWITCHPOINT_ROUTING_CACHE"


class TextEncoder(Protocol):
    """What the index needs of router/classifiers/encoder.Encoder."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_cache_dir() -> Path:
    """$SWITCHPOINT_ROUTING_CACHE, else <models_dir()>/cache/routing (built, never committed)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    try:
        from switchpoint.router.classifiers import models_dir  # the Encoder API's models directory
    except ImportError:  # the classifiers package is optional for the selectors themselves
        return Path.home() / ".cache" / "switchpoint" / "routing"
    return models_dir() / "cache" / "routing"


def _rows_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def cache_path(dataset: RoutingDataset, encoder_name: str, cache_dir: Path | None = None) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in encoder_name)
    return (cache_dir or default_cache_dir()) / f"{dataset.digest[:16]}-{_rows_digest(dataset.ids)}-{safe}.npy"


def embed_dataset(dataset: RoutingDataset, encoder: TextEncoder, cache_dir: Path | None = None,
                  batch: int = 256, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, dim) float32 embeddings of the dataset's prompts, from the cache when it matches."""
    path = cache_path(dataset, encoder.name, cache_dir)
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.ndim == 2 and cached.shape[0] == len(dataset):
            return cached.astype(np.float32, copy=False)
    parts = []
    for start in range(0, len(dataset), batch):
        parts.append(np.asarray(encoder.encode(dataset.prompts[start:start + batch]), dtype=np.float32))
        if progress is not None:
            progress(min(start + batch, len(dataset)), len(dataset))
    emb = np.concatenate(parts, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, emb)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return emb


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:  # one request (the router's case): the same arithmetic in 3 numpy calls, not 6
        norm = np.sqrt(np.add.reduce(x[0] * x[0]))
        return x / (norm if norm > 0 else np.inf)
    norms = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / np.where(norms > 0, norms, np.inf)


SEARCH_ALL_UP_TO = 2048  # rows: larger indexes search an inverted file (IVF) ...
PROJECTED_DIMS = 64  # ... of a PCA projection of the embeddings, ...
RERANK, RERANK_MIN = 4, 100  # ... rescoring the best max(RERANK x k, RERANK_MIN) rows it finds there in full ...
RERANK_EXTRA = 320  # ... but at most k + RERANK_EXTRA (rescore_depth) ...
RECALL_K = 40  # ... and probing the fewest lists that find, on a sample of the indexed prompts (leave-one-out), ...
RECALL_TARGET = 0.97  # ... this share of each one's exact top RECALL_K neighbours (a target of 0.95 gave 0.87-0.95
# on unseen MMLU families, 0.97 gives 0.90-0.975: prompts unlike the index's own are harder to search)
RECALL_SAMPLE = 256  # indexed prompts the recall is measured on (a fixed stride sample)
KMEANS_ROUNDS = 12
KMEANS_SEED = 0
BLOCK = 4096  # rows per matmul when building: bounds memory at BLOCK x lists floats


def rescore_depth(k: int) -> int:
    """Rows a top-k search rescores in all dimensions (+1: room for an excluded row). Measured on 300 of each shipped
    file's prompts, each leaving itself out, against the exact top k: at k = 40 (dcrouter) 4k rows find 0.968 and 3k
    0.958, so small k keep 4k; at k = 160 (MMLU) 4k find 0.975 and 3k 0.971: what 4k still misses is in lists not
    probed, and the last 160 rows (a quarter of the rescoring reads, the search's costliest step) add 0.004."""
    return min(max(RERANK * k, RERANK_MIN), k + RERANK_EXTRA) + 1


def stride_sample(n: int, limit: int) -> np.ndarray:
    """A fixed stride sample of at most `limit` of n rows."""
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(np.int64)


def principal_directions(x: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims) the top principal directions of the rows of x (uncentred: they keep the dot products), from the
    eigenvectors of the d x d Gram matrix (cheaper than an SVD of the N x d rows)."""
    x64 = np.asarray(x, dtype=np.float64)
    _, vectors = np.linalg.eigh(x64.T @ x64)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dims].astype(np.float32))


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.concatenate([np.argmax(x[s:s + BLOCK] @ centroids.T, axis=1) for s in range(0, len(x), BLOCK)])


def spherical_kmeans(x: np.ndarray, lists: int, rounds: int = KMEANS_ROUNDS,
                     seed: int = KMEANS_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (L, d) unit, assignment (N,)) of unit rows x; deterministic for a seed. Lists left empty are
    dropped, so L <= lists."""
    rng = np.random.default_rng(seed)
    centroids = x[np.sort(rng.choice(len(x), size=min(lists, len(x)), replace=False))]
    for _ in range(rounds):
        assign = nearest_centroid(x, centroids)
        counts = np.bincount(assign, minlength=len(centroids))
        starts = (np.cumsum(counts) - counts)[counts > 0]  # each non-empty list's first row in sorted order
        centroids = normalise(np.add.reduceat(x[np.argsort(assign, kind="stable")], starts, axis=0))
    return centroids, nearest_centroid(x, centroids)


class Scratch(threading.local):
    """Per-thread work arrays of one inverted file's searches, made on first use and reused (grown when a larger k
    asks for more rescoring rows): no array of the index's size is allocated per query. Thread-local, so two
    threads searching the same index never share them."""

    coarse: np.ndarray  # (N,) float32 the projected cosines of the rows read
    ids: np.ndarray  # (N,) int64 their row numbers
    gathered: np.ndarray  # (depth, d) float32 the rows to rescore, gathered

    def get(self, n: int, depth: int, dim: int) -> Scratch:
        if getattr(self, "ids", None) is None or len(self.ids) < n:
            self.coarse, self.ids = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int64)
        if getattr(self, "gathered", None) is None or self.gathered.shape[0] < depth or self.gathered.shape[1] != dim:
            self.gathered = np.empty((depth, dim), dtype=np.float32)
        return self


@dataclass
class InvertedFile:
    """The indexed rows, projected to PROJECTED_DIMS and grouped by their nearest k-means centroid (the lists),
    each group contiguous.

    A query is projected, scores the centroids, then the projected rows of the `probes` lists whose centroids
    are nearest; the best rescore_depth(k) of those are rescored with the full embeddings, and the k
    best by the full cosine are the answer (exact cosines). On the shipped MMLU index (13,986 rows: 30 lists,
    10 probed) a query reads 4,631 rows (33 %) in 64 dimensions and, at k = 160, 481 in 384: ~0.48M multiply-adds
    instead of 5.4M for a full scan, but ~1.9 MB of the index from memory, most of a query's cost on a busy
    machine (the rescoring rows' gather and the lists' products). `recall`: the share of the exact top RECALL_K
    neighbours the search finds at `probes`, measured at build by running it on a sample of the indexed prompts,
    each leaving itself out."""

    full: np.ndarray  # (N, d) the index's unit embeddings, in the index's order
    projection: np.ndarray  # (d, p)
    centroids: np.ndarray  # (L, p)
    rows: np.ndarray  # (N, p) the projected rows in list order
    order: np.ndarray  # (N,) the index's row number of each position of `rows`
    spans: list[tuple[int, int]]  # per list, its [start, end) in `rows`
    probes: int = 1
    recall: float = 0.0
    _scratch: Scratch = field(default_factory=lambda: Scratch(), init=False, repr=False, compare=False)

    @classmethod
    def build(cls, x: np.ndarray, lists: int, dims: int = PROJECTED_DIMS) -> InvertedFile:
        projection = principal_directions(x, min(dims, x.shape[1]))
        y = normalise(x @ projection)
        centroids, assign = spherical_kmeans(y, lists)
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(len(centroids) + 1))
        spans = [(int(a), int(b)) for a, b in itertools.pairwise(bounds.tolist())]
        ivf = cls(x, projection, centroids, np.ascontiguousarray(y[order]), order, spans)
        ivf.probes, ivf.recall = ivf.calibrate()
        return ivf

    def search(self, q: np.ndarray, k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(rows, sims), the k' = min(k, readable) most similar indexed rows to the unit query q (d,) by the full
        cosine, best first; it reads more lists than `probes` when those hold fewer than k + 1 rows (exclude: a
        row to leave out).

        One query costs a few dozen numpy calls on small arrays, so their overhead counts as much as the
        arithmetic: np.dot (not @, a ufunc with more dispatch) writing into this thread's scratch arrays, no
        intermediate concatenation. Every product is the same BLAS call on the same block as a plain version
        would make (a list's rows scored together, the rescoring rows gathered first), so the cosines are the
        same bits."""
        y = np.dot(q, self.projection)
        y = y / max(float(np.sqrt(np.dot(y, y))), 1e-12)
        cs = np.dot(self.centroids, y)
        lists = len(cs)
        probe = np.argpartition(cs, lists - self.probes)[lists - self.probes:] if self.probes < lists \
            else np.arange(lists)
        spans = [self.spans[j] for j in probe.tolist()]
        if sum(b - a for a, b in spans) < k + 1 and self.probes < lists:  # tiny lists: read on, nearest first
            spans = [self.spans[j] for j in np.argsort(-cs, kind="stable").tolist()]
            reach = np.searchsorted(np.cumsum([b - a for a, b in spans]), k + 1)
            spans = spans[:reach + 1]
        depth = rescore_depth(k)
        scratch = self._scratch.get(len(self.full), depth, self.full.shape[1])
        n = 0
        for a, b in spans:  # each list's rows scored as one block (its own gemv: the same bits every time)
            np.dot(self.rows[a:b], y, out=scratch.coarse[n:n + b - a])
            n += b - a
        coarse = scratch.coarse[:n]
        rows = np.concatenate([self.order[a:b] for a, b in spans], out=scratch.ids[:n])
        if depth < n:  # the best `depth` by the projected cosine, in no particular order
            rows = rows[np.argpartition(coarse, n - depth)[n - depth:]]
        # mode="clip" (the rows are in range): with mode="raise", take() into `out` goes through a temporary
        gathered = np.take(self.full, rows, axis=0, out=scratch.gathered[:len(rows)], mode="clip")
        sims = np.dot(gathered, q)
        if exclude >= 0:
            sims[rows == exclude] = -np.inf
        return top(rows, sims, k)

    def calibrate(self, k: int = RECALL_K, target: float = RECALL_TARGET,
                  sample: int = RECALL_SAMPLE) -> tuple[int, float]:
        """(fewest probes whose recall reaches `target`, that recall): the share of a sample row's exact top-k
        neighbours by the full cosine (itself left out) that search() returns, by bisection on the probes (the
        recall grows with them)."""
        q = stride_sample(len(self.full), sample)
        kk = min(k, len(self.full) - 1)
        exact = self.full[q] @ self.full.T
        exact[np.arange(len(q)), q] = -np.inf
        truth = np.argpartition(exact, exact.shape[1] - kk, axis=1)[:, exact.shape[1] - kk:]

        def recall(probes: int) -> float:
            self.probes = probes
            found = [self.search(self.full[r], kk, int(r))[0] for r in q]
            return float(np.mean([np.isin(t, f).mean() for t, f in zip(truth, found, strict=True)]))

        lo, hi = 1, len(self.spans)
        scores = {hi: recall(hi)}
        while lo < hi:
            mid = (lo + hi) // 2
            scores[mid] = recall(mid)
            if scores[mid] >= target - 1e-12:
                hi = mid
            else:
                lo = mid + 1
        self.probes = lo
        return lo, scores[lo]  # hi is always a measured point, and lo == hi here


def top(rows: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of (rows, sims) (1-D), best first (ties: the order given); -inf entries only as a last resort."""
    kk = min(k, len(sims))
    part = np.argpartition(sims, len(sims) - kk)[len(sims) - kk:] if kk < len(sims) else np.arange(len(sims))
    best = part[np.argsort(-sims[part], kind="stable")]
    return rows[best], sims[best]


def default_lists(n: int) -> int:
    """The size rule: every row scored up to SEARCH_ALL_UP_TO rows, else ~sqrt(n) / 4 lists (a few hundred rows
    each: at this size a query's cost is numpy's per-call overhead, one matmul per list read, more than FLOPs)."""
    return 0 if n <= SEARCH_ALL_UP_TO else round(math.sqrt(n) / 4)


@dataclass
class KnnIndex:
    """Labelled prompts for cosine kNN: embeddings (N, d) L2-normalised, labels per model.

    Search cost on one core is multiply-adds plus numpy's per-call overhead (a full scan of a 14k x 384 index is
    5.4M multiply-adds per query): above SEARCH_ALL_UP_TO rows the index is an inverted file of ~sqrt(N) / 4
    k-means lists over a 64-dimension PCA projection, rescored with the full embeddings (InvertedFile), whose
    recall of the exact top-40 neighbours is measured at build (`recall`; it probes the fewest lists that reach
    0.97). `lists`: None for that rule, 0 to score every row, else that many lists.
    """

    embeddings: np.ndarray
    scores: np.ndarray  # (N, M)
    output_tokens: np.ndarray  # (N, M)
    ids: list[str]
    models: tuple[str, ...]
    encoder: str
    digest: str
    lists: int | None = None

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0] if self.embeddings.ndim == 2 else 0
        if n == 0:
            raise SelectorError("the kNN index is empty: the dataset has no labelled prompt")
        if self.scores.shape != (n, len(self.models)) or self.output_tokens.shape != (n, len(self.models)):
            raise SelectorError(f"the kNN index's labels ({self.scores.shape}) do not match its {n} embeddings "
                                f"and {len(self.models)} models")
        if self.lists is not None and (isinstance(self.lists, bool) or not isinstance(self.lists, int)
                                       or self.lists < 0):
            raise SelectorError(f"lists must be an integer >= 0 (0: score every row), got {self.lists!r}")
        self.embeddings = np.ascontiguousarray(normalise(self.embeddings))
        self.labels = np.hstack([self.scores, self.output_tokens]).astype(np.float64)  # (N, 2M): one gather per query
        lists = default_lists(n) if self.lists is None else min(self.lists, n)
        self.ivf = InvertedFile.build(self.embeddings, lists) if lists > 1 else None
        # (d, N) row-major for the full scan: one query is then a contiguous gemv, ~1.8x faster than embeddings.T
        self._by_dim = np.ascontiguousarray(self.embeddings.T) if self.ivf is None else self.embeddings.T

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def recall(self) -> float:
        """The search's measured recall of the exact top RECALL_K neighbours (1.0: every row is scored)."""
        return 1.0 if self.ivf is None else self.ivf.recall

    @classmethod
    def from_dataset(cls, dataset: RoutingDataset, embeddings: np.ndarray, encoder: str,
                     lists: int | None = None) -> KnnIndex:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(dataset):
            raise DatasetError(f"{dataset.path}: {embeddings.shape} embeddings for {len(dataset)} rows")
        return cls(embeddings, dataset.scores, dataset.output_tokens.astype(np.float64), list(dataset.ids),
                   dataset.models, encoder, dataset.digest, lists)

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        if queries.shape[-1] != self.dim:
            raise SelectorError(f"the request embedding has {queries.shape[-1]} dimensions; the kNN index was "
                                f"built with encoder '{self.encoder}' ({self.dim}): use the same encoder")
        return normalise(queries)

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(n, N) cosine similarities of queries (n, d) to every indexed prompt (a full scan)."""
        return self._queries(queries) @ self._by_dim

    def neighbours(self, queries: np.ndarray, k: int,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(idx, sim), each (n, k'), k' = min(k, N - excluded), most similar first.

        exclude: (n,) a row index to leave out per query (-1: none) — leave-one-out on the index's own rows.
        An inverted file answers one query at a time (the router's case), a full scan the whole batch at once.
        """
        q = self._queries(queries)
        n_avail = len(self.ids) - (1 if exclude is not None and np.any(exclude >= 0) else 0)
        kk = max(1, min(k, n_avail))
        if self.ivf is not None and len(q) == 1:  # the router's case: no batch to fill
            idx1, sims1 = self.ivf.search(q[0], kk, -1 if exclude is None else int(exclude[0]))
            return idx1[None, :], sims1[None, :]
        if self.ivf is not None:
            idx, sims = np.empty((len(q), kk), dtype=np.int64), np.empty((len(q), kk), dtype=np.float32)
            for r in range(len(q)):
                idx[r], sims[r] = self.ivf.search(q[r], kk, -1 if exclude is None else int(exclude[r]))
            return idx, sims
        sims = q @ self._by_dim
        if exclude is not None:
            rows = np.nonzero(exclude >= 0)[0]
            sims[rows, exclude[rows]] = -np.inf
        if kk < sims.shape[1]:
            part = np.argpartition(sims, sims.shape[1] - kk, axis=1)[:, sims.shape[1] - kk:]  # the kk largest
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), (sims.shape[0], sims.shape[1])).copy()
        psims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-psims, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(psims, order, axis=1)
