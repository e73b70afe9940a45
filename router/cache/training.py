"""Train the pair verifier on data/cache/pairs.jsonl and write verifier_model.py (numpy, offline).

    python -m switchpoint.router.cache.training [--check]

Rows: every pair whose second text would reach the verifier as a candidate of the first (cosine with the
default encoder at or above policy.DEFAULT_THRESHOLD, equal guards, no swapped roles, no different question
word). Model: L2-regularised logistic regression over verifier.FEATURES (standardised), fitted by Newton's
method. Calibration: 5-fold cross-validation (folds by a digest of the pair id) gives every row an out-of-fold
score; the table maps a score threshold to the precision and paraphrase hit rate of those scores. The final
weights are fitted on all rows. data/cache/heldout.jsonl is never read here.

--check: exit 1 if the shipped verifier_model.py differs from what training produces now (a test runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from switchpoint.router.cache.guard import compare, guards_match, salient
from switchpoint.router.cache.policy import DEFAULT_THRESHOLD
from switchpoint.router.cache.verifier import FEATURES, features

MODEL = Path(__file__).with_name("verifier_model.py")
FOLDS = 5
L2 = 1.0
AUGMENTED_WEIGHT = 0.25  # the near-duplicates together weigh a quarter of the real pairs
GRID = [round(0.01 * i, 2) for i in range(90)] + [round(0.9 + 0.002 * i, 3) for i in range(51)]  # finer at the top


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Logistic regression weights and bias, rows weighted (the bias is not regularised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -60, 60)))
        grad = xb.T @ (weight * (p - y)) + reg * w
        hess = (xb * (weight * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return w[:-1], float(w[-1])


def rows(pairs: list[dict[str, object]], cosines: np.ndarray, texts: list[tuple[str, str]],
         floor: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Feature rows of the pairs that reach the verifier, their labels, and their pair indices."""
    xs, ys, where = [], [], []
    for i, (pair, (a, b), cos) in enumerate(zip(pairs, texts, cosines, strict=True)):
        if cos < floor or not guards_match(salient(a), salient(b)):
            continue
        c = compare(b, a)
        if c.roles_swapped or c.intent_differs:
            continue
        xs.append(features(c, float(cos)))
        ys.append(1.0 if pair["label"] == "paraphrase" else 0.0)
        where.append(i)
    return np.array(xs), np.array(ys), where


def near_duplicates(text: str) -> list[str]:
    """Label-preserving variants of a prompt (a repeat typed carelessly): lower case without the question mark;
    a polite prefix; one article dropped."""
    words = text.split()
    out = [text.lower().rstrip("?").strip(), "hey, " + text[:1].lower() + text[1:]]
    for i, w in enumerate(words):
        if w.lower() in ("the", "a", "an"):
            out.append(" ".join(words[:i] + words[i + 1:]))
            break
    return [t for t in out if t and t != text]


def calibration(scores: np.ndarray, y: np.ndarray, paraphrases: int) -> list[tuple[float, float, float]]:
    table = []
    for t in GRID:
        hit = scores >= t
        tp, fp = float((hit & (y == 1)).sum()), float((hit & (y == 0)).sum())
        table.append([t, tp / (tp + fp) if tp + fp else 1.0, tp / max(1, paraphrases)])
    table = [row for row in table if row[2] > 0]  # a threshold nothing passes says nothing about precision
    for i in range(len(table) - 2, -1, -1):  # a threshold's precision: the worst of itself and all above it
        table[i][1] = min(table[i][1], table[i + 1][1])
    return [(t, round(p, 4), round(r, 4)) for t, p, r in table]


def train() -> str:
    from switchpoint.bench.cache import load_pairs
    from switchpoint.router.classifiers.encoder import DEFAULT_ENCODER, load_encoder

    pairs = load_pairs()
    encoder = load_encoder(DEFAULT_ENCODER)
    texts = [(p.a, p.b) for p in pairs]
    cosines = (encoder.encode([a for a, _ in texts]) * encoder.encode([b for _, b in texts])).sum(axis=1)
    raw: list[dict[str, object]] = [{"label": p.label} for p in pairs]
    x, y, where = rows(raw, cosines, texts, DEFAULT_THRESHOLD)
    extra = [(a, v) for a, _ in texts for v in near_duplicates(a)]  # what real traffic repeats most
    xd, yd, _ = rows([{"label": "paraphrase"}] * len(extra), np.ones(len(extra)), extra, DEFAULT_THRESHOLD)
    x, y = np.vstack([x, xd]), np.concatenate([y, yd])
    where += [-1 - i for i in range(len(yd))]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    fold = np.array([int(hashlib.sha256((pairs[i].id if i >= 0 else str(i)).encode()).hexdigest(), 16) % FOLDS
                     for i in where])
    oof = np.zeros(len(y))
    real = np.array([i >= 0 for i in where])  # the table: development pairs only, not the made-up near-duplicates
    weight = np.where(real, 1.0, AUGMENTED_WEIGHT * real.sum() / max(1, (~real).sum()))
    for k in range(FOLDS):
        w, b = fit(z[fold != k], y[fold != k], weight[fold != k])
        oof[fold == k] = 1.0 / (1.0 + np.exp(-(z[fold == k] @ w + b)))
    w, b = fit(z, y, weight)
    table = calibration(oof[real], y[real], sum(p.same for p in pairs))
    lines = [
        '"""The pair verifier\'s weights: written by `python -m switchpoint.router.cache.training`; do not edit."""',
        "# ruff: noqa: E501",
        "",
        f"# {int(real.sum())} candidate pairs of data/cache/pairs.jsonl ({int(y[real].sum())} paraphrases) and "
        f"{int((~real).sum())} near-duplicates of their first texts; encoder {encoder.name}, similarity floor "
        f"{DEFAULT_THRESHOLD}",
        f"FEATURES = {FEATURES!r}",
        f"WEIGHTS = {[round(float(v), 6) for v in w]!r}",
        f"BIAS = {round(b, 6)!r}",
        f"MEAN = {[round(float(v), 6) for v in mean]!r}",
        f"SCALE = {[round(float(v), 6) for v in scale]!r}",
        "# (score threshold, out-of-fold precision at and above it, paraphrase hit rate of all pairs)",
        "CALIBRATION = [",
        *[f"    {row!r}," for row in table],
        "]",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if verifier_model.py is not what training "
                        "produces now")
    args = parser.parse_args(argv)
    text = train()
    if args.check:
        if MODEL.read_text(encoding="utf-8") != text:
            print(f"{MODEL} is stale: run python -m switchpoint.router.cache.training", file=sys.stderr)
            return 1
        return 0
    MODEL.write_text(text, encoding="utf-8")
    print(f"wrote {MODEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
