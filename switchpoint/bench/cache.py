"""`switchpoint bench cache`: lookup latency at 10k and 100k entries, write rate, and hit quality on labelled pairs.

Latency: a local Redis 8 (no append-only file) started by the bench, or --redis. Entries are
real prompts (data/routing: MMLU, GSM8K, MT-Bench and LLMRouter questions, plus the pairs set)
and variations of them (a prompt with the first words of another appended), encoded with the
default encoder, so the vectors have the clustering of real text; all in ONE scope, the worst
case for a store with one vector set per scope. The store is filled through the cache's own
write path (SemanticCache.store: the bounded queue, batches pipelined by the background
writer): the fill rate is the sustained writes/s. Lookups go through SemanticCache.lookup at
the default threshold, sequentially, half near-duplicates of stored prompts (a word dropped)
and half prompts never stored; each lookup is followed by a GET of a 200-byte value on the same
server, client library and event loop, so the baseline sees the same load (this VM is shared).
The lookups are timed once more while the write queue is kept full (Route while Reports
queue writes).

Quality: data/cache/pairs.jsonl (paraphrase pairs: same answer; near-miss pairs: same topic,
different answer). Pairwise: a pair's first text is stored in a scope of its own, the second
is looked up through the cache. The default threshold was chosen on the calibration half
(policy.DEFAULT_THRESHOLD); the bench re-derives it there (highest paraphrase hit rate whose
precision is >= 0.95 on the pairs and >= 0.8 in the populated case) and reports hit rate and
precision on the held-out test half. Populated: the first text of every pair stored in one
scope, the second texts of a half looked up; pairs are only labelled against their own
partner, so a hit on another pair's (sometimes equivalent) question counts as wrong: a lower
bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchpoint.bench.router import percentile
from switchpoint.router.cache import (
    DEFAULT_THRESHOLD,
    MemoryStore,
    SemanticCache,
    cache_scope,
    conversation,
    guards_match,
    salient,
)
from switchpoint.router.cache.guard import same_question
from switchpoint.router.cache.redis_store import RedisStore
from switchpoint.router.cache.store import CANDIDATES, VERIFIED

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "data" / "cache" / "pairs.jsonl"
ROUTING = ROOT / "data" / "routing"
THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]  # 0.50 .. 0.95
TARGET_PRECISION, POPULATED_PRECISION = 0.95, 0.8


@dataclass(frozen=True)
class Pair:
    id: str
    label: str
    split: str
    a: str
    b: str

    @property
    def same(self) -> bool:
        return self.label == "paraphrase"


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [Pair(r["id"], r["label"], r["split"], r["a"], r["b"]) for r in rows]


def _prompts(limit: int) -> list[str]:
    texts: list[str] = []
    seen: set[str] = set()
    for path in sorted(ROUTING.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            prompt = " ".join(json.loads(line)["prompt"].split())[:400]
            if prompt and prompt not in seen:
                seen.add(prompt)
                texts.append(prompt)
    for pair in load_pairs():
        for t in (pair.a, pair.b):
            if t not in seen:
                seen.add(t)
                texts.append(t)
    random.Random(7).shuffle(texts)
    return texts[:limit]


def synthetic_texts(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """n distinct texts to store (real prompts, then variations of them) and prompts never stored."""
    base = _prompts(10**9)
    held_out, base = base[:2000], base[2000:]
    out = list(base[:n])
    seen = set(out)
    while len(out) < n:
        text = f"{rng.choice(base)} {' '.join(rng.choice(base).split()[:8])}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out, held_out


def _near_duplicate(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) > 3:
        del words[rng.randrange(len(words))]
    return " ".join(words)


async def _fill(cache: SemanticCache, scope, texts: Sequence[str], vectors: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Store entries through the write path as fast as it drains; returns entries written per second."""
    start = time.perf_counter()
    written0 = cache.counters["written"]
    for text, vec in zip(texts, vectors, strict=True):
        while cache.queue.full():
            await asyncio.sleep(0.001)
        cache.store(scope, text, vec, f"cached answer to: {text[:200]}", "bench", 24 * 3600, 64 * 1024)
    await cache.drain(timeout_s=3600)
    written = cache.counters["written"] - written0
    return written / (time.perf_counter() - start)


async def _lookups(cache: SemanticCache, scope, queries: Sequence[tuple[str, np.ndarray]],  # type: ignore[no-untyped-def]
                   client=None) -> tuple[list[float], list[float]]:
    """Lookup times, and when a Redis client is given, the time of a GET right after each lookup: the two
    interleave, so both see the same load on the machine (a shared VM's p99 moves from minute to minute)."""
    out, gets = [], []
    for text, vec in queries:
        conv = conversation([_Turn(text)])
        start = time.perf_counter()
        result = await cache.lookup(scope, conv, vec, DEFAULT_THRESHOLD)
        out.append((time.perf_counter() - start) * 1000)
        if result.outcome == "unavailable":
            raise RuntimeError("the cache store was unavailable during the benchmark")
        if client is not None:
            start = time.perf_counter()
            await client.get("sp:bench:get")
            gets.append((time.perf_counter() - start) * 1000)
    return out, gets


@dataclass(frozen=True)
class _Turn:
    content: str
    role: str = "user"


async def latency(url: str, sizes: Sequence[int], lookups: int, encoder) -> dict[str, object]:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    rng = random.Random(11)
    texts, held_out = synthetic_texts(max(sizes), rng)
    vectors = encoder.encode(texts)
    scope = cache_scope("bench/latency", "bench", "bench-tenant", "bench-model", encoder=encoder.name)
    cache = SemanticCache(RedisStore(url, lookup_timeout_s=0.5), queue_size=8192, batch_size=128)
    await cache.flush("bench/latency")
    client = aioredis.Redis.from_url(url, protocol=2)  # the GET baseline: the same library, server and loop
    await client.set("sp:bench:get", "x" * 200)
    entries: dict[str, dict[str, float]] = {}
    rates = []
    filled = 0
    for size in sorted(sizes):
        rates.append(await _fill(cache, scope, texts[filled:size], vectors[filled:size]))
        filled = size
        stored = texts[:size]
        dup = [_near_duplicate(rng.choice(stored), rng) for _ in range(lookups // 2)]
        new = [rng.choice(held_out) for _ in range(lookups - len(dup))]
        qtexts = dup + new
        rng.shuffle(qtexts)
        queries = list(zip(qtexts, encoder.encode(qtexts), strict=True))
        await _lookups(cache, scope, queries[:50], client)  # warm the connection pool and the script cache
        before = dict(cache.counters)
        times, gets = await _lookups(cache, scope, queries, client)
        hits = sum(cache.counters[k] - before[k] for k in ("hit_exact", "hit_semantic"))
        entries[str(size)] = {"lookup_p50_ms": round(percentile(times, 0.5), 3),
                              "lookup_p99_ms": round(percentile(times, 0.99), 3),
                              "get_p50_ms": round(percentile(gets, 0.5), 3),
                              "get_p99_ms": round(percentile(gets, 0.99), 3),
                              "hit_share": round(hits / len(times), 3)}
    # Lookups while the write queue is kept busy (Reports queueing writes during Routes).
    extra = [f"{t} (extra {i})" for i, t in enumerate(held_out[:1500])]
    extra_vec = encoder.encode(extra)
    writer = asyncio.get_running_loop().create_task(_fill(cache, scope, extra, extra_vec))
    await asyncio.sleep(0.2)
    busy, _ = await _lookups(cache, scope, queries[: min(len(queries), 1000)])
    await writer
    await cache.flush("bench/latency")
    await cache.close()
    await client.aclose()
    largest = entries[str(max(sizes))]
    get_p99 = largest["get_p99_ms"]
    return {"entries": entries, "get_p99_ms": round(get_p99, 3),
            "writes_per_s": round(rates[-1], 1), "writes_per_s_by_size": [round(r, 1) for r in rates],
            "lookup_p99_ms_while_writing": round(percentile(busy, 0.99), 3),
            "lookup_target_ms": round(3 * get_p99 + 1, 3),
            "lookup_target_met": largest["lookup_p99_ms"] < 3 * get_p99 + 1}


def pair_outcomes(pairs: Sequence[Pair], sims: np.ndarray, threshold: float) -> tuple[float, float]:
    """(paraphrase hit rate, hit precision) of pairwise lookups: b looked up against a alone."""
    tp = fp = 0
    for pair, sim in zip(pairs, sims, strict=True):
        if sim >= threshold and guards_match(salient(pair.a), salient(pair.b)) and same_question(pair.b, pair.a):
            tp += pair.same
            fp += not pair.same
    paraphrases = sum(p.same for p in pairs)
    return tp / max(1, paraphrases), tp / max(1, tp + fp)


def populated_outcomes(pairs: Sequence[Pair], queries: Sequence[int], a_vec: np.ndarray, b_vec: np.ndarray,
                       threshold: float) -> tuple[float, float]:
    """Every pair's a in one scope, the b of each pair in `queries` looked up (candidates tried as the stores
    do): a hit is counted right only on its own paraphrase partner, so this is a lower bound."""
    sims = b_vec[list(queries)] @ a_vec.T
    guards = [salient(p.a) for p in pairs]
    tp = fp = 0
    for row, i in enumerate(queries):
        pair = pairs[i]
        guard = salient(pair.b)
        verified = 0
        for j in np.argsort(-sims[row])[:CANDIDATES]:
            if sims[row, j] < threshold or verified == VERIFIED:
                break
            if not guards_match(guards[j], guard):
                continue
            verified += 1
            if same_question(pair.b, pairs[j].a):
                tp += j == i and pair.same
                fp += not (j == i and pair.same)
                break
    return float(tp / max(1, sum(pairs[i].same for i in queries))), float(tp / max(1, tp + fp))


def choose_threshold(curve: list[dict[str, float]]) -> float:
    ok = [c for c in curve if c["precision"] >= TARGET_PRECISION and c["populated_precision"] >= POPULATED_PRECISION]
    return max(ok, key=lambda c: (c["hit_rate"], c["threshold"]))["threshold"] if ok else THRESHOLDS[-1]


async def _through_cache(pairs: Sequence[Pair], a_vec: np.ndarray, b_vec: np.ndarray, url: str | None,
                         threshold: float) -> tuple[float, float]:
    """The pairwise lookups through SemanticCache and the real store (each pair in a scope of its own)."""
    cache = SemanticCache(RedisStore(url, lookup_timeout_s=0.5) if url else MemoryStore(max_entries=10**6))
    for pair, vec in zip(pairs, a_vec, strict=True):
        cache.store(cache_scope("bench/pairs", "bench", pair.id, "m"), pair.a, vec, f"answer {pair.id}", "bench",
                    600, 64 * 1024)
        if cache.queue.full():
            await cache.drain()
    await cache.drain()
    tp = fp = 0
    for pair, vec in zip(pairs, b_vec, strict=True):
        got = await cache.lookup(cache_scope("bench/pairs", "bench", pair.id, "m"), pair.b, vec, threshold)
        if got.outcome == "hit":
            tp += pair.same
            fp += not pair.same
    await cache.flush("bench/pairs")
    await cache.close()
    return tp / max(1, sum(p.same for p in pairs)), tp / max(1, tp + fp)


async def quality(encoder, url: str | None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    pairs = load_pairs()
    a_vec, b_vec = encoder.encode([p.a for p in pairs]), encoder.encode([p.b for p in pairs])
    sims = (a_vec * b_vec).sum(axis=1)
    halves = {}
    for split in ("calibration", "test"):
        idx = [i for i, p in enumerate(pairs) if p.split == split]
        sub = [pairs[i] for i in idx]
        curve = []
        for t in THRESHOLDS:
            hit_rate, precision = pair_outcomes(sub, sims[idx], t)
            pop_rate, pop_precision = populated_outcomes(pairs, idx, a_vec, b_vec, t)
            curve.append({"threshold": t, "hit_rate": round(hit_rate, 3), "precision": round(precision, 3),
                          "populated_hit_rate": round(pop_rate, 3), "populated_precision": round(pop_precision, 3)})
        halves[split] = (idx, sub, curve)
    test_idx, test_pairs, _ = halves["test"]
    hit_rate, precision = await _through_cache(test_pairs, a_vec[test_idx], b_vec[test_idx], url, DEFAULT_THRESHOLD)
    cal_idx, cal_pairs, _ = halves["calibration"]
    cal_rate, cal_precision = pair_outcomes(cal_pairs, sims[cal_idx], DEFAULT_THRESHOLD)
    pop_rate, pop_precision = populated_outcomes(pairs, test_idx, a_vec, b_vec, DEFAULT_THRESHOLD)
    return {
        "threshold": DEFAULT_THRESHOLD, "threshold_rederived": choose_threshold(halves["calibration"][2]),
        "hit_rate": round(hit_rate, 3), "hit_precision": round(precision, 3),
        "quality_split": "test", "pairs": {"paraphrase": sum(p.same for p in pairs),
                                           "near_miss": sum(not p.same for p in pairs)},
        "calibration_hit_rate": round(cal_rate, 3), "calibration_hit_precision": round(cal_precision, 3),
        "populated_hit_rate": round(pop_rate, 3), "populated_hit_precision": round(pop_precision, 3),
        "quality_target_met": precision >= TARGET_PRECISION and hit_rate >= 0.5,
        "curve": {"calibration": halves["calibration"][2], "test": halves["test"][2]},
    }


def plot(curves: dict[str, list[dict[str, float]]], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    styles = {"calibration": ("tab:blue", "-"), "test": ("tab:orange", "-")}
    for split, curve in curves.items():
        color, _ = styles[split]
        ax.plot([c["hit_rate"] for c in curve], [c["precision"] for c in curve], "o-", color=color,
                label=f"{split}: pairwise")
        ax.plot([c["populated_hit_rate"] for c in curve], [c["populated_precision"] for c in curve], "s--",
                color=color, alpha=0.6, label=f"{split}: populated (lower bound)")
        for c in curve:
            if c["threshold"] == threshold:
                ax.annotate(f"{threshold:.2f}", (c["hit_rate"], c["precision"]), textcoords="offset points",
                            xytext=(6, -12), color=color)
    ax.axhline(TARGET_PRECISION, color="grey", lw=0.8, ls=":")
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("paraphrase hit rate (recall)")
    ax.set_ylabel("hit precision")
    ax.set_title("Semantic cache on data/cache/pairs.jsonl, thresholds 0.50-0.95\n(minilm-static + guard)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0.4, 1.01)
    ax.legend(loc="lower left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from switchpoint.localredis import RedisServer
    from switchpoint.router.classifiers.encoder import DEFAULT_ENCODER, load_encoder

    encoder = load_encoder(args.encoder or DEFAULT_ENCODER)
    sizes = args.sizes or ([1000, 5000] if args.quick else [10_000, 100_000])
    lookups = args.lookups or (300 if args.quick else 2000)
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(RedisServer(persist=False)).url
        result: dict[str, object] = {"encoder": encoder.name, "store": "redis vector sets", "sizes": sizes}
        result.update(asyncio.run(latency(url, sizes, lookups, encoder)))
        result.update(asyncio.run(quality(encoder, url)))
    if not args.no_plot:
        path = Path(args.plot or ("bench-results/cache-pr-quick.png" if args.quick else "docs/cache-pr.png"))
        plot(result["curve"], DEFAULT_THRESHOLD, path)  # type: ignore[arg-type]
        result["plot"] = str(path)
    if args.json:
        print(json.dumps(result))
        return 0
    _print(result)
    return 0


def _print(r: dict[str, object]) -> None:
    out = sys.stdout.write
    out(f"semantic cache on Redis vector sets, encoder {r['encoder']}\n")
    for size, e in r["entries"].items():  # type: ignore[attr-defined]
        out(f"  {int(size):>7,} entries: lookup p50 {e['lookup_p50_ms']:.3f} ms  p99 {e['lookup_p99_ms']:.3f} ms"
            f"  (hits {e['hit_share']:.0%})\n")
    out(f"  GET p99 {r['get_p99_ms']:.3f} ms -> target p99 < {r['lookup_target_ms']:.3f} ms: "
        f"{'met' if r['lookup_target_met'] else 'NOT met'}\n")
    out(f"  lookup p99 while the write queue is full: {r['lookup_p99_ms_while_writing']:.3f} ms\n")
    out(f"  writes through the write path: {r['writes_per_s']:,.0f}/s\n")
    out(f"  pairs (held-out half) at threshold {r['threshold']}: paraphrase hit rate {r['hit_rate']:.3f}, "
        f"hit precision {r['hit_precision']:.3f} -> {'met' if r['quality_target_met'] else 'NOT met'}"
        f" (calibration half: {r['calibration_hit_rate']:.3f} / {r['calibration_hit_precision']:.3f}; "
        f"populated: {r['populated_hit_rate']:.3f} / {r['populated_hit_precision']:.3f})\n")
    out(f"  threshold re-derived on the calibration half: {r['threshold_rederived']}\n")
    out("  threshold  test hit rate  precision  populated precision\n")
    for c in r["curve"]["test"]:  # type: ignore[index]
        out(f"  {c['threshold']:>9.2f}  {c['hit_rate']:>13.3f}  {c['precision']:>9.3f}"
            f"  {c['populated_precision']:>19.3f}\n")
    if "plot" in r:
        out(f"  plot: {r['plot']}\n")
