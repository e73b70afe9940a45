"""Prompt embeddings of a routing dataset, cached on disk, and the kNN index built from them.

Cache key: the dataset file's SHA-256, the encoder's name and a digest of the row ids loaded (rows skipped
for missing models change it). A cache file that does not match (shape, ids digest) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


PROJECT_ABOVE = 2048  # rows: larger indexes search in a PCA projection ...
PROJECTED_DIMS = 128  # ... of this many dimensions


def principal_directions(x: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims) the top principal directions of the rows of x (uncentred: they keep the dot products)."""
    _, _, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    return np.ascontiguousarray(vt[:dims].T.astype(np.float32))


@dataclass
class KnnIndex:
    """Labelled prompts for brute-force cosine kNN: embeddings (N, d) L2-normalised, labels per model.

    Search cost is memory-bound (a 14k x 384 float32 index is 21 MB, read once per query): above PROJECT_ABOVE
    rows the search runs on a 128-dimensional PCA projection of the embeddings (renormalised), which keeps 85 %
    of the variance and ~85 % of the top-40 neighbours of the full cosine on the shipped MMLU data, and reads a
    third of the memory (~0.3 ms instead of ~1.2 ms per query on one core). `dims`: None for that rule, 0 for
    the full embeddings, else the projection's dimensions.
    """

    embeddings: np.ndarray
    scores: np.ndarray  # (N, M)
    output_tokens: np.ndarray  # (N, M)
    ids: list[str]
    models: tuple[str, ...]
    encoder: str
    digest: str
    dims: int | None = None

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0] if self.embeddings.ndim == 2 else 0
        if n == 0:
            raise SelectorError("the kNN index is empty: the dataset has no labelled prompt")
        if self.scores.shape != (n, len(self.models)) or self.output_tokens.shape != (n, len(self.models)):
            raise SelectorError(f"the kNN index's labels ({self.scores.shape}) do not match its {n} embeddings "
                                f"and {len(self.models)} models")
        self.embeddings = normalise(self.embeddings)
        dims = (PROJECTED_DIMS if n > PROJECT_ABOVE else 0) if self.dims is None else self.dims
        self.projection = principal_directions(self.embeddings, dims) \
            if 0 < dims < self.embeddings.shape[1] else None
        searched = self.embeddings if self.projection is None else normalise(self.embeddings @ self.projection)
        # (d, N) row-major: one query is then a contiguous gemv, ~1.8x faster than against embeddings.T
        self._by_dim = np.ascontiguousarray(searched.T)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def from_dataset(cls, dataset: RoutingDataset, embeddings: np.ndarray, encoder: str,
                     dims: int | None = None) -> KnnIndex:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(dataset):
            raise DatasetError(f"{dataset.path}: {embeddings.shape} embeddings for {len(dataset)} rows")
        return cls(embeddings, dataset.scores, dataset.output_tokens.astype(np.float64), list(dataset.ids),
                   dataset.models, encoder, dataset.digest, dims)

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(n, N) cosine similarities of L2-normalised queries (n, d) to every indexed prompt."""
        if queries.shape[-1] != self.dim:
            raise SelectorError(f"the request embedding has {queries.shape[-1]} dimensions; the kNN index was "
                                f"built with encoder '{self.encoder}' ({self.dim}): use the same encoder")
        q = normalise(queries)
        return (q if self.projection is None else normalise(q @ self.projection)) @ self._by_dim

    def neighbours(self, queries: np.ndarray, k: int,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(idx, sim), each (n, k'), k' = min(k, N - excluded), most similar first.

        exclude: (n,) a row index to leave out per query (-1: none) — leave-one-out on the index's own rows.
        """
        sims = self.similarities(queries)
        if exclude is not None:
            rows = np.nonzero(exclude >= 0)[0]
            sims[rows, exclude[rows]] = -np.inf
        n_avail = sims.shape[1] - (1 if exclude is not None and np.any(exclude >= 0) else 0)
        kk = max(1, min(k, n_avail))
        if kk < sims.shape[1]:
            part = np.argpartition(sims, sims.shape[1] - kk, axis=1)[:, sims.shape[1] - kk:]  # the kk largest
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), (sims.shape[0], sims.shape[1])).copy()
        psims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-psims, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(psims, order, axis=1)
