"""Routing-quality metrics, as the papers define them (pure functions; tests/test_bench_routing.py checks them
against hand-computed cases).

RouteLLM (two models, weak and strong; lm-sys/RouteLLM routellm/evals/evaluate.py):
- PGR(router) = (quality(router) - quality(weak)) / (quality(strong) - quality(weak)).
- APGR: the area under quality as the share of strong calls sweeps the router's points (trapezoids over the
  points sorted by share), minus the weak model's area over the same span, over (strong - weak) x that span.
  With points spanning shares 0..1 this is the mean PGR over the sweep; random mixing scores 0.5.
- CPT(x%): the share of strong calls at which the curve (piecewise linear between the router's points, by
  share) first reaches quality(weak) + x% x (strong - weak). RouteLLM interpolates with np.interp over the
  accuracies, which assumes they increase with the share; "first reaches" is the same on such a curve and
  defined on any other. None when the curve never reaches it.

RouterBench (many models; withmartian/routerbench evaluation/AIQ.py):
- the non-decreasing convex hull of a router's (cost, quality) points: the upper concave envelope from its
  cheapest point up to its best quality (points past the best quality are dropped);
- extended flat to the largest cost among the routers compared; AIQ = the area under it / that cost (the area
  starts at the router's cheapest point, as in RouterBench).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (n, 2) array of (cost, quality), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite")
    return p


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0)) if len(x) > 1 else 0.0


def nondecreasing_hull(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The vertices (m, 2), by increasing cost, of the upper concave envelope of the points, cut at its maximum."""
    p = _points(points)
    p = p[np.lexsort((-p[:, 1], p[:, 0]))]  # by cost, best quality first among equal costs
    keep = np.ones(len(p), dtype=bool)
    keep[1:] = p[1:, 0] != p[:-1, 0]  # one point per cost: its best quality
    p = p[keep]
    hull: list[np.ndarray] = []
    for q in p:  # Andrew's monotone chain, upper side
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (q[1] - y1) - (y2 - y1) * (q[0] - x1) >= 0:  # hull[-1] on or below the chord
                hull.pop()
            else:
                break
        hull.append(q)
    h = np.array(hull)
    top = int(np.argmax(h[:, 1]))  # first vertex reaching the best quality
    return h[: top + 1]


def aiq(points: Sequence[Sequence[float]] | np.ndarray, max_cost: float) -> float:
    """RouterBench's AIQ of one router's points, the hull extended flat to max_cost (>= every point's cost)."""
    h = nondecreasing_hull(points)
    if max_cost <= 0:
        raise ValueError(f"max_cost must be > 0, got {max_cost}")
    if max_cost < h[-1, 0] - 1e-15 * max(1.0, abs(max_cost)):
        raise ValueError(f"max_cost {max_cost} is below the router's cost {h[-1, 0]}")
    if max_cost > h[-1, 0]:
        h = np.vstack([h, [max_cost, h[-1, 1]]])
    return _trapezoid(h[:, 1], h[:, 0]) / max_cost


def pgr(quality: float, weak: float, strong: float) -> float:
    if strong == weak:
        raise ValueError("PGR is undefined when the strong and weak models have the same quality")
    return (quality - weak) / (strong - weak)


def _curve(strong_share: Sequence[float] | np.ndarray,
           quality: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(strong_share, dtype=np.float64)
    y = np.asarray(quality, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("strong_share and quality must be 1-D sequences of the same non-zero length")
    order = np.lexsort((y, x))
    return x[order], y[order]


def apgr(strong_share: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray,
         weak: float, strong: float) -> float:
    x, y = _curve(strong_share, quality)
    span = x[-1] - x[0]
    if span <= 0:
        raise ValueError("APGR needs points at two or more different strong-call shares")
    if strong == weak:
        raise ValueError("APGR is undefined when the strong and weak models have the same quality")
    return (_trapezoid(y, x) - weak * span) / ((strong - weak) * span)


def cpt(strong_share: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray,
        weak: float, strong: float, pct: float) -> float | None:
    """The smallest strong-call share at which the curve reaches PGR = pct (0..1); None if it never does."""
    x, y = _curve(strong_share, quality)
    target = weak + pct * (strong - weak)
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            if y[i] == y[i - 1]:
                return float(x[i - 1])
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return None
