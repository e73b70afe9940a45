"""`switchpoint bench routing`: the selection algorithms on labelled routing data, offline.

Data: data/routing/*.jsonl (the interchange format; routellm_mmlu: two models, dcrouter_train: nine).
Split: a row is in the test split when unit_hash("switchpoint-routing-split", its prompt lower-cased with
whitespace collapsed) < 0.3 — fixed, and duplicate prompts land on the same side. Everything is tuned on the
train split only (kNN's k and weighting by leave-one-out inside train, the heads' L2 by 3-fold CV inside
train, the lambda grids from train costs); every figure reported is on the test split.

Embeddings: the router's default encoder (minilm-static), or --encoder; cached on disk keyed by the dataset's
digest, the rows and the encoder (router/selectors/index.py), the same cache the router's kNN index uses.

Each algorithm runs through switchpoint.router.selectors: cost-quality and knn through
CostQualitySelector.estimate_batch + first_choice (the functions rank() itself calls, batched over the test
prompts); weighted and bandit through their rank() per prompt (the bandit learns online: it streams the train
split, then keeps learning on the test split, whose picks are scored). A trade-off sweep gives each algorithm a
set of (mean cost, mean quality) points. Baselines: each single model (= static with that model first), random
mixing (RouterBench's zero router: the hull of the single models; for two models the line weak -> strong), the
oracle (per prompt, the best true quality - lambda x cost, swept: its cheapest-correct point is lambda -> 0+).
Two-model metrics (APGR, CPT) are on strong-call share; a sweep that does not reach share 0 or 1 is closed by
the all-weak / all-strong static orders, as RouteLLM's threshold sweeps always are.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchpoint.bench.routing_metrics import aiq, apgr, cpt, nondecreasing_hull
from switchpoint.router.selectors import (
    BanditParams,
    BanditSelector,
    CandidateModel,
    SelectionRequest,
    WeightedParams,
    WeightedSelector,
)
from switchpoint.router.selectors.base import candidate_costs, decision_costs, first_choice
from switchpoint.router.selectors.costquality import CostQualitySelector, lambda_grid
from switchpoint.router.selectors.dataset import RoutingDataset, load_dataset
from switchpoint.router.selectors.estimators import KnnEstimator, LinearEstimator
from switchpoint.router.selectors.index import KnnIndex, TextEncoder, embed_dataset
from switchpoint.router.selectors.simple import unit_hash

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data" / "routing"
DATASETS = {"routellm_mmlu": "routellm_mmlu.jsonl", "dcrouter": "dcrouter_train.jsonl"}
TEST_SHARE = 0.3
SPLIT_SALT = "switchpoint-routing-split"
DEFAULT_PLOT = ROOT / "docs" / "routing-curves.png"
QUICK_PLOT = ROOT / "bench-results" / "routing-curves-quick.png"
K_GRID = (5, 10, 20, 40, 80, 160)
TEMPERATURE_GRID = (0.0, 0.02, 0.05)
L2_GRID = (1e-4, 1e-3, 1e-2)
QUICK_TRAIN, QUICK_TEST = 1200, 400


@dataclass
class Split:
    name: str
    data: RoutingDataset
    emb: np.ndarray
    train: np.ndarray  # row indices
    test: np.ndarray
    candidates: list[CandidateModel]

    @property
    def two_model(self) -> bool:
        return len(self.data.models) == 2

    def rows(self, part: np.ndarray) -> tuple[RoutingDataset, np.ndarray]:
        return self.data.take(part), self.emb[part]


def normalised_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def split_rows(data: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
    test = np.array([unit_hash(SPLIT_SALT, normalised_prompt(p)) < TEST_SHARE for p in data.prompts])
    return np.nonzero(~test)[0], np.nonzero(test)[0]


def quick_subset(data: RoutingDataset, rows: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` rows with the smallest id hash (a fixed subsample)."""
    if len(rows) <= limit:
        return rows
    keys = np.array([unit_hash("switchpoint-routing-quick", data.ids[i]) for i in rows])
    return np.sort(rows[np.argsort(keys)[:limit]])


def candidates_of(data: RoutingDataset) -> list[CandidateModel]:
    """The dataset's models as candidates, priced as the data's costs imply (RoutingDataset.prices)."""
    return [CandidateModel(m, m, pin, pout) for m, (pin, pout) in data.prices().items()]


# -- evaluation of picks ------------------------------------------------------------------------------------
def outcome(data: RoutingDataset, pick: np.ndarray) -> tuple[float, float]:
    """(mean USD, mean quality) of choosing column pick[i] for row i (the stored, true costs and scores)."""
    r = np.arange(len(pick))
    return float(data.costs[r, pick].mean()), float(data.scores[r, pick].mean())


def strong_index(data: RoutingDataset) -> int:
    return int(np.argmax(data.costs.mean(axis=0)))


def sweep_cost_quality(data: RoutingDataset, quality: np.ndarray, cost: np.ndarray,
                       lams: np.ndarray) -> list[tuple[float, float, float, float]]:
    """(lambda, cost, quality, strong share) per lambda: the first choice of cost_quality_order for each row."""
    strong = strong_index(data)
    out = []
    for lam in lams:
        pick = first_choice(quality, cost, float(lam))
        c, q = outcome(data, pick)
        out.append((float(lam), c, q, float(np.mean(pick == strong))))
    return out


def curve_score(data: RoutingDataset, points: list[tuple[float, float, float, float]], max_cost: float) -> float:
    """The tuning objective on train: APGR for two models, AIQ otherwise."""
    if len(data.models) == 2:
        s, w = strong_index(data), 1 - strong_index(data)
        weak_q, strong_q = data.scores[:, w].mean(), data.scores[:, s].mean()
        share, qual = close_two_model([p[3] for p in points], [p[2] for p in points], weak_q, strong_q)
        return apgr(share, qual, weak_q, strong_q)
    return aiq([(p[1], p[2]) for p in points], max(max_cost, max(p[1] for p in points)))


def close_two_model(share: Sequence[float], quality: Sequence[float], weak: float,
                    strong: float) -> tuple[list[float], list[float]]:
    s, q = list(share), list(quality)
    if min(s) > 0:
        s.append(0.0)
        q.append(weak)
    if max(s) < 1:
        s.append(1.0)
        q.append(strong)
    return s, q


# -- algorithms ---------------------------------------------------------------------------------------------
BASES = ("absolute", "relative")


def run_knn(sp: Split, quick: bool, log: Callable[[str], None]) -> dict:
    train, temb = sp.rows(sp.train)
    test, eemb = sp.rows(sp.test)
    index = KnnIndex.from_dataset(train, temb, "bench")
    max_cost = float(train.costs.mean(axis=0).max())
    best: tuple[float, int, float, str] | None = None
    loo = np.arange(len(train))
    for k in (10, 40) if quick else K_GRID:
        for temp in (0.0,) if quick else TEMPERATURE_GRID:
            sel = CostQualitySelector(KnnEstimator(index, k, temp), lam=0.0, algorithm="knn")
            est, cost = sel.estimate_batch(sp.candidates, temb, train.input_tokens, train.output_tokens[:, 0], loo)
            for basis in BASES:
                weighed = decision_costs(cost, basis)
                score = curve_score(train, sweep_cost_quality(train, est.quality, weighed, lambda_grid(weighed)),
                                    max_cost)
                if best is None or score > best[0]:
                    best = (score, k, temp, basis)
    assert best is not None
    _, k, temp, basis = best
    log(f"  knn: k={k} temperature={temp} cost basis {basis} (train leave-one-out "
        f"{'APGR' if sp.two_model else 'AIQ'} {best[0]:.4f})")
    sel = CostQualitySelector(KnnEstimator(index, k, temp), lam=0.0, algorithm="knn", cost_basis=basis)
    return {"params": {"k": k, "temperature": temp, "cost_basis": basis}, **test_sweep(sel, sp, train, test, eemb)}


def test_sweep(sel: CostQualitySelector, sp: Split, train: RoutingDataset, test: RoutingDataset,
               eemb: np.ndarray) -> dict:
    """The trade-off sweep on the test split (lambda grid from the train split's costs), and rank()'s cost."""
    est, cost = sel.estimate_batch(sp.candidates, eemb, test.input_tokens, test.output_tokens[:, 0])
    lams = lambda_grid(decision_costs(candidate_cost_matrix(sp, train), sel.cost_basis))
    sweep = sweep_cost_quality(test, est.quality, decision_costs(cost, sel.cost_basis), lams)
    return {"sweep": sweep, "rank_us": time_rank(sel, sp, eemb, test)}


def candidate_cost_matrix(sp: Split, data: RoutingDataset) -> np.ndarray:
    return candidate_costs(sp.candidates, data.input_tokens, data.output_tokens)


def time_rank(sel: CostQualitySelector, sp: Split, emb: np.ndarray, data: RoutingDataset, n: int = 200) -> float:
    """Median microseconds of one rank() call (one request, the whole index scanned)."""
    times = []
    for i in range(min(n, len(data))):
        req = SelectionRequest(int(data.input_tokens[i]), int(data.output_tokens[i, 0]), emb[i], data.ids[i])
        t0 = time.perf_counter()
        sel.rank(sp.candidates, req)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e6, 1)


def run_linear(sp: Split, quick: bool, log: Callable[[str], None]) -> dict:
    train, temb = sp.rows(sp.train)
    test, eemb = sp.rows(sp.test)
    max_cost = float(train.costs.mean(axis=0).max())
    folds = np.arange(len(train)) % 3
    best: tuple[float, float, str] | None = None
    cost = candidate_cost_matrix(sp, train)
    for l2 in (1e-3,) if quick else L2_GRID:
        q = np.empty(train.scores.shape)
        for f in range(3):
            tr, te = np.nonzero(folds != f)[0], np.nonzero(folds == f)[0]
            heads = LinearEstimator.fit(train.take(tr), temb[tr], l2)
            q[te] = heads.estimate(temb[te], [c.model for c in sp.candidates]).quality
        for basis in BASES:
            weighed = decision_costs(cost, basis)
            score = curve_score(train, sweep_cost_quality(train, q, weighed, lambda_grid(weighed)), max_cost)
            if best is None or score > best[0]:
                best = (score, l2, basis)
    assert best is not None
    _, l2, basis = best
    log(f"  cost-quality (linear heads): l2={l2} cost basis {basis} (train 3-fold CV "
        f"{'APGR' if sp.two_model else 'AIQ'} {best[0]:.4f})")
    sel = CostQualitySelector(LinearEstimator.fit(train, temb, l2), lam=0.0, cost_basis=basis)
    return {"params": {"l2": l2, "cost_basis": basis}, **test_sweep(sel, sp, train, test, eemb)}


def run_weighted(sp: Split, quick: bool) -> dict:
    """Weighted between adjacent vertices of the single models' hull on train (random mixing, realised)."""
    train, _ = sp.rows(sp.train)
    test, _ = sp.rows(sp.test)
    singles = np.column_stack([train.costs.mean(axis=0), train.scores.mean(axis=0)])
    hull = nondecreasing_hull(singles)
    verts = [int(np.nonzero((singles == v).all(axis=1))[0][0]) for v in hull]
    strong = strong_index(test)
    sweep = []
    for a, b in itertools.pairwise(verts) if len(verts) > 1 else [(verts[0], verts[0])]:
        for alpha in np.linspace(0, 1, 6 if quick else 11):
            w = [0.0] * len(sp.candidates)
            w[a] += 1 - alpha
            w[b] += alpha
            sel = WeightedSelector(WeightedParams(tuple(w)))
            pick = np.array([sel.rank(sp.candidates, SelectionRequest(int(test.input_tokens[i]),
                                                                      int(test.output_tokens[i, 0]), None,
                                                                      test.ids[i])).first
                             for i in range(len(test))])
            c, q = outcome(test, pick)
            sweep.append((float(alpha), c, q, float(np.mean(pick == strong))))
    return {"params": {"pairs": [[sp.candidates[a].key, sp.candidates[b].key]
                                 for a, b in itertools.pairwise(verts)]}, "sweep": sweep}


BANDIT_BITS = (0, 2, 4)


def bandit_stream(sp: Split, sel: BanditSelector, data: RoutingDataset, emb: np.ndarray,
                  rows: Sequence[int]) -> np.ndarray:
    """Route each row in turn with rank() and feed its true score back (the Report): the picks."""
    picks = np.empty(len(rows), dtype=np.int64)
    for n, i in enumerate(rows):
        r = sel.rank(sp.candidates, SelectionRequest(int(data.input_tokens[i]), int(data.output_tokens[i, 0]),
                                                     emb[i], data.ids[i]))
        picks[n] = r.first
        sel.feedback(r.evidence.context or "-", sp.candidates[r.first].model, float(data.scores[i, r.first]))
    return picks


def run_bandit(sp: Split, quick: bool, basis: str, log: Callable[[str], None]) -> dict:
    """Online: the train split streamed once (shuffled, fixed seed), then the test split, learning throughout.
    context_bits is tuned on train (stream 70% of it, score the picks on the rest); the cost basis is the one
    kNN's tuning chose on train."""
    train, temb = sp.rows(sp.train)
    test, eemb = sp.rows(sp.test)
    lams = lambda_grid(decision_costs(candidate_cost_matrix(sp, train), basis), 5 if quick else 17)
    order = np.random.default_rng(7).permutation(len(train))
    cut = int(len(order) * 0.7)
    max_cost = float(train.costs.mean(axis=0).max())
    strong = strong_index(train)
    best: tuple[float, int] | None = None
    for bits in (4,) if quick else BANDIT_BITS:
        held = train.take(order[cut:])
        points = []
        for lam in lams:
            sel = BanditSelector(BanditParams(lam=float(lam), context_bits=bits, seed=11, cost_basis=basis))
            bandit_stream(sp, sel, train, temb, order[:cut])
            pick = bandit_stream(sp, sel, train, temb, order[cut:])
            c, q = outcome(held, pick)
            points.append((float(lam), c, q, float(np.mean(pick == strong))))
        score = curve_score(held, points, max_cost)
        if best is None or score > best[0]:
            best = (score, bits)
    assert best is not None
    bits = best[1]
    log(f"  bandit: context_bits={bits} cost basis {basis} (train stream {'APGR' if sp.two_model else 'AIQ'} "
        f"{best[0]:.4f})")
    sweep = []
    strong = strong_index(test)
    for lam in lams:
        sel = BanditSelector(BanditParams(lam=float(lam), context_bits=bits, seed=11, cost_basis=basis))
        bandit_stream(sp, sel, train, temb, order)
        pick = bandit_stream(sp, sel, test, eemb, range(len(test)))
        c, q = outcome(test, pick)
        sweep.append((float(lam), c, q, float(np.mean(pick == strong))))
    return {"params": {"exploration": 1.0, "context_bits": bits, "cost_basis": basis,
                       "warm_start": "train split streamed once"}, "sweep": sweep}


def run_oracle(sp: Split) -> dict:
    test, _ = sp.rows(sp.test)
    lams = lambda_grid(test.costs)
    return {"params": {}, "sweep": sweep_cost_quality(test, test.scores, test.costs, lams)}


# -- report -------------------------------------------------------------------------------------------------
def summarise(sp: Split, results: dict[str, dict]) -> dict[str, dict]:
    test, _ = sp.rows(sp.test)
    singles = {f"single:{m}": (float(test.costs[:, j].mean()), float(test.scores[:, j].mean()))
               for j, m in enumerate(test.models)}
    max_cost = max([c for c, _ in singles.values()] + [p[1] for r in results.values() for p in r["sweep"]])
    out: dict[str, dict] = {}
    strong, weak = strong_index(test), 1 - strong_index(test)
    weak_q, strong_q = float(test.scores[:, weak].mean()), float(test.scores[:, strong].mean())

    def entry(points: list[tuple[float, float]], shares: list[float] | None, extra: dict) -> dict:
        e: dict = {"aiq": round(aiq(points, max_cost), 6)}
        if sp.two_model and shares is not None:
            s, q = close_two_model(shares, [p[1] for p in points], weak_q, strong_q)
            e["apgr"] = round(apgr(s, q, weak_q, strong_q), 6)
            for pct in (50, 80, 95):
                v = cpt(s, q, weak_q, strong_q, pct / 100)
                e[f"cpt{pct}"] = None if v is None else round(v, 6)
            e["strong_share"] = [round(x, 6) for x in shares]
        e["points"] = [[round(c, 12), round(q, 6)] for c, q in points]
        return {**e, **extra}

    for name, (c, q) in singles.items():
        col = test.models.index(name.removeprefix("single:"))
        out[name] = entry([(c, q)], None, {"share": 1.0 if col == strong else 0.0})
    single_pts = list(singles.values())
    static_shares = [1.0 if j == strong else 0.0 for j in range(len(test.models))]
    out["static"] = entry(single_pts, static_shares if sp.two_model else None,
                          {"params": {"orders": "each model first"}})
    mix = [tuple(p) for p in nondecreasing_hull(single_pts)]
    mix_shares = [1.0 if abs(p[0] - singles[f"single:{test.models[strong]}"][0]) < 1e-18 else 0.0 for p in mix]
    out["random"] = entry(mix, mix_shares if sp.two_model else None,  # type: ignore[arg-type]
                          {"params": {"definition": "convex mixes of the single models (zero router)"}})
    for name, r in results.items():
        pts = [(p[1], p[2]) for p in r["sweep"]]
        shares = [p[3] for p in r["sweep"]]
        extra = {"params": r.get("params", {}), "lambdas": [p[0] for p in r["sweep"]]}
        if "rank_us" in r:
            extra["rank_us_p50"] = r["rank_us"]
        out[name] = entry(pts, shares, extra)
    return out


def targets(name: str, report: dict[str, dict], two_model: bool) -> dict:
    algos = ["knn", "cost-quality", "bandit", "weighted"]
    lines: list[str] = []
    best_name = max((a for a in algos if a in report), key=lambda a: report[a]["apgr" if two_model else "aiq"])
    best = report[best_name]
    if two_model:
        ok = best["apgr"] >= 0.60 and best["cpt50"] is not None and best["cpt50"] < 0.40
        cpt50 = "never" if best["cpt50"] is None else f"{best['cpt50']:.1%}"
        lines.append(f"{name}: best {best_name}: APGR {best['apgr']:.3f} (target >= 0.60), CPT(50%) {cpt50} "
                     f"(target < 40%)")
    else:
        singles = max(v["aiq"] for k, v in report.items() if k.startswith("single:"))
        base = max(singles, report["random"]["aiq"])
        oracle = report["oracle"]["aiq"]
        gain = best["aiq"] / base - 1
        closed = (best["aiq"] - base) / (oracle - base) if oracle > base else 0.0
        ok = gain >= 0.05 and closed >= 1 / 3
        lines.append(f"{name}: best {best_name}: AIQ {best['aiq']:.4f} vs baseline {base:.4f} ({gain:+.1%}; target "
                     f">= +5%), closes {closed:.1%} of the gap to the oracle {oracle:.4f} (target >= 33.3%)")
    return {"met": ok, "best": best_name, "lines": lines}


def load_split(name: str, path: Path, encoder: TextEncoder, quick: bool, cache_dir: Path | None,
               log: Callable[[str], None]) -> Split:
    data = load_dataset(path)
    train, test = split_rows(data)
    if quick:
        train, test = quick_subset(data, train, QUICK_TRAIN), quick_subset(data, test, QUICK_TEST)
        keep = np.sort(np.concatenate([train, test]))
        data = data.take(keep)
        pos = {int(r): i for i, r in enumerate(keep)}
        train = np.array([pos[int(r)] for r in train])
        test = np.array([pos[int(r)] for r in test])
    t0 = time.perf_counter()
    emb = embed_dataset(data, encoder, cache_dir)
    log(f"{name}: {len(data)} rows ({len(train)} train / {len(test)} test), {len(data.models)} models, "
        f"embeddings {emb.shape[1]}-d from {encoder.name} ({time.perf_counter() - t0:.1f} s incl. cache)")
    return Split(name, data, emb, train, test, candidates_of(data))


def run_dataset(sp: Split, quick: bool, log: Callable[[str], None]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    results["knn"] = run_knn(sp, quick, log)
    results["cost-quality"] = run_linear(sp, quick, log)
    results["weighted"] = run_weighted(sp, quick)
    results["bandit"] = run_bandit(sp, quick, results["knn"]["params"]["cost_basis"], log)
    results["oracle"] = run_oracle(sp)
    return summarise(sp, results)


def run(args: argparse.Namespace) -> int:
    from switchpoint.router.classifiers.encoder import DEFAULT_ENCODER, load_encoder

    quiet = args.json
    log: Callable[[str], None] = (lambda s: print(s, file=sys.stderr)) if quiet else print
    encoder = load_encoder(args.encoder or DEFAULT_ENCODER)
    data_dir = Path(args.data) if args.data else DATA_DIR
    names = args.datasets or list(DATASETS)
    started = time.perf_counter()
    report: dict[str, dict] = {}
    verdicts = {}
    for name in names:
        sp = load_split(name, data_dir / DATASETS[name], encoder, args.quick, None, log)
        report[name] = run_dataset(sp, args.quick, log)
        verdicts[name] = targets(name, report[name], sp.two_model)
    plot_path = Path(args.plot) if args.plot else (QUICK_PLOT if args.quick else DEFAULT_PLOT)
    plot = None if args.no_plot else plot_curves(report, plot_path)
    out = {"datasets": report, "targets": verdicts, "encoder": encoder.name, "quick": bool(args.quick),
           "split": {"test_share": TEST_SHARE, "key": "sha256 of the normalised prompt"}, "plot": plot,
           "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(out))
        return 0
    for name, rep in report.items():
        print_table(name, rep)
        for line in verdicts[name]["lines"]:
            print(line)
    if plot:
        print(f"plot: {plot}")
    return 0


def print_table(name: str, rep: dict[str, dict]) -> None:
    two = any("apgr" in v for v in rep.values())
    print(f"\n{name} (test split)")
    head = f"  {'router':<44}{'AIQ':>8}"
    if two:
        head += f"{'APGR':>8}{'CPT50':>8}{'CPT80':>8}{'CPT95':>8}"
    print(head + f"{'best quality':>14}{'at $/1k':>10}")
    for router, v in rep.items():
        best = max(v["points"], key=lambda p: (p[1], -p[0]))
        line = f"  {router:<44}{v['aiq']:>8.4f}"
        if two:
            def pct(x: float | None) -> str:
                return "-" if x is None else f"{x:.1%}"
            line += (f"{v['apgr']:>8.3f}" if "apgr" in v else f"{'-':>8}")
            line += "".join(f"{pct(v.get(f'cpt{p}')):>8}" for p in (50, 80, 95))
        print(line + f"{best[1]:>14.4f}{best[0] * 1000:>10.4f}")
    for router, v in rep.items():
        if "rank_us_p50" in v:
            print(f"  {router}: one rank() call {v['rank_us_p50']:.0f} us (median; {v['params']})")


def plot_curves(report: dict[str, dict], path: Path) -> str | None:
    """Two-model data: quality against the share of strong calls (RouteLLM's view, the curves APGR integrates);
    multi-model data: quality against mean cost, each router's non-decreasing hull (what AIQ integrates). Linear
    axes, so a straight segment is the mix of its two ends."""
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
            if router == "static":
                continue
            style = {"linestyle": "--" if router in ("random", "oracle") else "-",
                     "linewidth": 2.2 if router in ("knn", "cost-quality") else 1.2}
            if two:
                strong_q = max(p[1] for k, p in ((k, r["points"][0]) for k, r in rep.items()
                                                  if k.startswith("single:") and r.get("share") == 1.0))
                weak_q = max(p[1] for k, p in ((k, r["points"][0]) for k, r in rep.items()
                                                if k.startswith("single:") and r.get("share") == 0.0))
                share, qual = close_two_model(v["strong_share"], list(pts[:, 1]), weak_q, strong_q)
                order = np.lexsort((qual, share))
                ax.plot(np.array(share)[order] * 100, np.array(qual)[order], marker=".", markersize=3,
                        label=f"{router} (APGR {v['apgr']:.3f})", **style)
            else:
                h = nondecreasing_hull(pts)
                ax.plot(h[:, 0] * 1000, h[:, 1], marker=".", label=f"{router} (AIQ {v['aiq']:.3f})", **style)
        ax.set_title(f"{name} (test split)")
        ax.set_xlabel("strong-model calls (%)" if two else "mean cost per 1,000 queries (USD)")
        ax.set_ylabel("mean quality")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
