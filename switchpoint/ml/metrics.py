"""Classification metrics in numpy: accuracy, macro-F1, per-label precision/recall, confusion matrix, ROC AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """counts[true, predicted]."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (probability a random positive outscores a random negative; ties count half)."""
    pos, neg = score[y_true == 1], score[y_true == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def report(labels: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray, positive_score: np.ndarray | None = None
           ) -> dict:
    """Metrics of predictions against the truth; for binary heads pass the positive label's score for AUC."""
    k = len(labels)
    m = confusion(y_true, y_pred, k)
    per_label = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = int(m[i, i])
        predicted, actual = int(m[:, i].sum()), int(m[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if actual:
            f1s.append(f1)
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                            "support": actual}
    n = int(m.sum())
    majority = int(np.argmax(m.sum(axis=1)))
    out = {
        "rows": n,
        "accuracy": round(float(np.trace(m)) / n, 4) if n else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "majority_label": labels[majority],
        "majority_accuracy": round(float(m[majority].sum()) / n, 4) if n else 0.0,
        "per_label": per_label,
        "confusion": m.tolist(),
    }
    if positive_score is not None and k == 2:
        auc = roc_auc(y_true, positive_score)
        out["roc_auc"] = None if auc is None else round(auc, 4)
        out["precision"] = per_label[labels[1]]["precision"]
        out["recall"] = per_label[labels[1]]["recall"]
    return out


def best_f1_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (predict positive iff score >= t) with the best positive-class F1 on these rows."""
    best_t, best_f1 = 0.5, -1.0
    for t in np.unique(np.round(score, 3)):
        pred = score >= t
        tp = int((pred & (y_true == 1)).sum())
        fp = int((pred & (y_true == 0)).sum())
        fn = int((~pred & (y_true == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def confusion_table(labels: Sequence[str], matrix: list[list[int]]) -> str:
    """A plain-text confusion matrix: rows are the true labels, columns the predicted ones."""
    short = [lab[:10] for lab in labels]
    width = max(5, *(len(s) for s in short))
    head = " " * (width + 2) + " ".join(s.rjust(width) for s in short)
    lines = ["rows: true label, columns: predicted label", head]
    for s, row in zip(short, matrix, strict=True):
        lines.append(s.ljust(width + 2) + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
