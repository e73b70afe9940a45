"""Train a classifier head on an encoder's embeddings, measure it on a held-out split, write head.onnx + head.json.

Recipe (the same for the CLI, the default heads and the bench's reference runs):
1. The rows are split by a hash of the text (`data.SPLIT_RULE`): `holdout` of them are held out and never seen
   by training, model selection or threshold choice.
2. From the training rows a validation part is split off the same way (salted differently, 20%). Each L2 strength
   of `L2_GRID` is fitted on the rest and scored on it by (accuracy + macro-F1) / 2; the best is kept.
   For a binary head with threshold="f1", the positive threshold with the best validation F1 is kept too.
3. The head is refitted on all training rows with that strength and measured on the held-out rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from switchpoint import __version__ as version
from switchpoint.ml import linear, mlp
from switchpoint.ml.data import SPLIT_RULE, rows_digest, split_heldout, text_unit
from switchpoint.ml.metrics import best_f1_threshold, report

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VALIDATION_SHARE = 0.2
MANIFEST_FORMAT = 1


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class TrainOptions:
    name: str
    holdout: float = 0.2
    seed: int = 0
    kind: str | None = None  # None: binary when there are exactly two labels, else multiclass
    positive: str | None = None  # binary: the positive label (default: the last in sorted order)
    labels: tuple[str, ...] | None = None  # fixed label order (default: sorted)
    l2: float | None = None  # None: chosen from L2_GRID on the validation part
    weighting: str = "balanced"  # class weights: balanced | none
    threshold: float | str = 0.5  # binary: a fixed threshold, or "f1" (best F1 on the validation part)
    model: str = "linear"  # linear | mlp (switchpoint.ml.mlp; epochs chosen on the validation part)
    description: str = ""  # what the data is, for the manifest
    extra: dict = field(default_factory=dict)  # more manifest fields (e.g. the label definition)


@dataclass
class TrainedHead:
    head: linear.LinearHead | mlp.MlpHead
    labels: tuple[str, ...]
    manifest: dict
    heldout_index: np.ndarray | None = None  # row indices of the held-out part
    heldout_probs: np.ndarray | None = None  # the final head's probabilities on them

    @property
    def kind_binary(self) -> bool:
        return self.manifest["kind"] == "binary"

    def write(self, out: Path) -> Path:
        """head.onnx and head.json into directory ``out`` (created); returns ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        name = self.manifest["name"]
        graph = mlp.mlp_to_onnx(self.head, name) if isinstance(self.head, mlp.MlpHead) else linear.to_onnx(self.head,
                                                                                                              name)
        onnx.save(graph, str(out / "head.onnx"))
        (out / "head.json").write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n")
        return out


def _label_order(labels: Sequence[str], opts: TrainOptions) -> tuple[tuple[str, ...], str]:
    present = sorted(set(labels))
    kind = opts.kind or ("binary" if len(present) == 2 else "multiclass")
    if opts.labels is not None:
        order = tuple(opts.labels)
        unknown = sorted(set(present) - set(order))
        if unknown:
            raise ValueError(f"labels {unknown} are not in the head's label set {list(order)}")
    else:
        order = tuple(present)
    if kind == "binary":
        if len(order) != 2:
            raise ValueError(f"a binary head needs exactly two labels, the data has {len(order)}: {list(order)}")
        positive = opts.positive or order[-1]
        if positive not in order:
            raise ValueError(f"positive label {positive!r} is not one of {list(order)}")
        order = (next(lab for lab in order if lab != positive), positive)
    elif len(order) < 2:
        raise ValueError(f"a classifier needs at least two labels, the data has {list(order)}")
    return order, kind


def _score(labels: tuple[str, ...], y: np.ndarray, probs: np.ndarray, kind: str, threshold: float) -> dict:
    if kind == "binary":
        pred = (probs[:, 1] >= threshold).astype(np.int64)
        return report(labels, y, pred, positive_score=probs[:, 1])
    return report(labels, y, probs.argmax(axis=1))


def train_on_embeddings(x: np.ndarray, texts: Sequence[str], labels: Sequence[str], opts: TrainOptions,
                        encoder_name: str) -> TrainedHead:
    """The recipe above on precomputed embeddings (row i of ``x`` embeds ``texts[i]``)."""
    if len(texts) != len(labels) or len(texts) != len(x):
        raise ValueError("texts, labels and embeddings differ in length")
    order, kind = _label_order(labels, opts)
    index = {lab: i for i, lab in enumerate(order)}
    y = np.array([index[lab] for lab in labels], dtype=np.int64)
    held = np.array(split_heldout(texts, opts.holdout, opts.seed))
    train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    if len(set(y[train_idx].tolist())) < 2 or len(held_idx) == 0:
        raise ValueError(f"{len(texts)} rows are too few: the training part needs two labels and the held-out "
                         f"part at least one row (holdout {opts.holdout})")
    val = np.array([text_unit(texts[i], opts.seed, "val:") < VALIDATION_SHARE for i in train_idx])
    fit_idx, val_idx = train_idx[~val], train_idx[val]

    if opts.model == "mlp":
        return _train_mlp(x, texts, labels, opts, encoder_name, order, kind, y, train_idx, held_idx, fit_idx, val_idx)
    if opts.model != "linear":
        raise ValueError(f"model must be linear or mlp, not {opts.model!r}")
    grid = (opts.l2,) if opts.l2 is not None else L2_GRID
    selection = []
    best = (-1.0, grid[0], 0.5)
    if len(val_idx) and len(set(y[fit_idx].tolist())) >= 2 and (len(grid) > 1 or opts.threshold == "f1"):
        for l2 in grid:
            h = linear.fit(x[fit_idx], y[fit_idx], len(order), kind, l2=l2, weighting=opts.weighting)
            probs = h.predict_proba(x[val_idx])
            t = best_f1_threshold(y[val_idx], probs[:, 1]) if kind == "binary" and opts.threshold == "f1" else 0.5
            m = _score(order, y[val_idx], probs, kind, t)
            score = (m["accuracy"] + m["macro_f1"]) / 2
            selection.append({"l2": l2, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                              "threshold": round(float(t), 4)})
            if score > best[0]:
                best = (score, l2, t)
    l2 = best[1]
    threshold = round(float(best[2]) if opts.threshold == "f1" else float(opts.threshold), 4)
    head = linear.fit(x[train_idx], y[train_idx], len(order), kind, l2=l2, weighting=opts.weighting)
    model = {
        "type": "logistic-regression" if kind == "binary" else "softmax-regression",
        "l2": l2, "class_weighting": opts.weighting, "optimizer": "L-BFGS (numpy), standardised inputs",
        "selection": selection,
    }
    return _finish(head, x, texts, labels, opts, encoder_name, order, kind, y, train_idx, held_idx, threshold, model)


def _train_mlp(x: np.ndarray, texts: Sequence[str], labels: Sequence[str], opts: TrainOptions, encoder_name: str,
               order: tuple[str, ...], kind: str, y: np.ndarray, train_idx: np.ndarray, held_idx: np.ndarray,
               fit_idx: np.ndarray, val_idx: np.ndarray) -> TrainedHead:
    threshold = 0.5 if opts.threshold == "f1" else float(opts.threshold)
    epochs, curve = mlp.MAX_EPOCHS, []
    if len(val_idx) and len(set(y[fit_idx].tolist())) >= 2:
        sub, epochs, curve = mlp.fit_mlp(x[fit_idx], y[fit_idx], len(order), kind, opts.weighting,
                                         val=(x[val_idx], y[val_idx]), seed=opts.seed)
        if kind == "binary" and opts.threshold == "f1":
            threshold = best_f1_threshold(y[val_idx], sub.predict_proba(x[val_idx])[:, 1])
    head, _, _ = mlp.fit_mlp(x[train_idx], y[train_idx], len(order), kind, opts.weighting, epochs=epochs,
                             seed=opts.seed)
    model = {
        "type": "mlp", "hidden": mlp.HIDDEN, "activation": "relu", "epochs": epochs,
        "weight_decay": mlp.WEIGHT_DECAY, "learning_rate": mlp.LEARNING_RATE, "batch": mlp.BATCH,
        "class_weighting": opts.weighting, "optimizer": "Adam (numpy), standardised inputs, seeded",
        "validation_accuracy_by_epoch": [round(a, 4) for a in curve],
    }
    return _finish(head, x, texts, labels, opts, encoder_name, order, kind, y, train_idx, held_idx,
                   round(float(threshold), 4), model)


def _finish(head: linear.LinearHead | mlp.MlpHead, x: np.ndarray, texts: Sequence[str], labels: Sequence[str],
            opts: TrainOptions, encoder_name: str, order: tuple[str, ...], kind: str, y: np.ndarray,
            train_idx: np.ndarray, held_idx: np.ndarray, threshold: float, model: dict) -> TrainedHead:
    held_probs = head.predict_proba(x[held_idx])
    held_metrics = _score(order, y[held_idx], held_probs, kind, threshold)

    thresholds = {order[1]: threshold} if kind == "binary" else {lab: 0.0 for lab in order}
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": opts.name,
        "kind": kind,
        "labels": list(order),
        "encoder": encoder_name,
        "dim": int(x.shape[1]),
        "thresholds": thresholds,
        "model": {"onnx": "head.onnx", "input": linear.INPUT_NAME, "output": linear.OUTPUT_NAME, **model},
        "training": {
            "description": opts.description,
            "data_sha256": rows_digest(texts, labels),
            "digest_rule": "sha256 of one JSON line {label, text} per row, sorted keys, UTF-8, in row order",
            "rows": len(texts),
            "train_rows": len(train_idx),
            "heldout_rows": len(held_idx),
            "holdout": opts.holdout,
            "seed": opts.seed,
            "split": SPLIT_RULE,
            "label_counts": {lab: int((y == i).sum()) for i, lab in enumerate(order)},
            **opts.extra,
        },
        "metrics": {"heldout": held_metrics},
        "created_by": f"switchpoint {version} (switchpoint.ml.train)",
    }
    return TrainedHead(head, order, manifest, held_idx, held_probs)


def encode_all(encoder: TextEncoder, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """Embeddings of all texts, in batches (the transformer pads a batch to its longest text)."""
    parts = [encoder.encode(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, encoder.dim), np.float32)


def train_head(texts: Sequence[str], labels: Sequence[str], encoder: TextEncoder, opts: TrainOptions,
               out: Path | None = None) -> TrainedHead:
    """Encode, train and (if ``out``) write a head directory."""
    trained = train_on_embeddings(encode_all(encoder, texts), texts, labels, opts, encoder.name)
    if out is not None:
        trained.write(out)
    return trained
