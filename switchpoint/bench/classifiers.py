"""`switchpoint bench classifiers`: what the neural signals cost and how accurate they are, on one core.

Sections, each a function returning part of the JSON report:
  encoder_latencies   p50/p99 of one text's embedding (tokenisation included) at 32, 128 and 512 word pieces,
                      for every built encoder; the process is pinned to one CPU and onnxruntime runs one thread.
  (heads, isolation)  the default heads' held-out accuracy and the rules-only Route p99 under classifier load
                      are added by their own functions; `run` merges every section's dict.

A length means word pieces of the text under the encoders' shared WordPiece tokenizer. The transformer's
window is 256 tokens ([CLS] and [SEP] included), so its 512-token measurement embeds the truncated
254-piece window (head + tail); `encoder_windows` in the report says what each encoder saw.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from switchpoint.bench.isolation import isolation, print_isolation
from switchpoint.bench.router import percentile
from switchpoint.ml.defaults import bench_heads
from switchpoint.router.classifiers import models_dir
from switchpoint.router.classifiers.encoder import DEFAULT_ENCODER, ENCODER_NAMES, Encoder, EncoderError, load_encoder

LENGTHS = (32, 128, 512)
TARGET_DEFAULT_128_P50_MS = 1.0

# Ordinary prose (not one sentence repeated), long enough for 512 word pieces.
_PROSE = (
    "Routing a request well means knowing what it asks for before any model has seen it. A short greeting can "
    "go to the smallest model in the fleet, while a question about contract law, a proof in number theory or a "
    "long refactoring task deserves a stronger one. Rules written by hand catch the obvious cases: keywords, "
    "regular expressions, the length of the prompt, the tenant and the tools it declares. They miss the rest, "
    "and the rest is most of the traffic. A sentence encoder turns the prompt into a vector whose direction "
    "says what it is about; a small classifier head on top of that vector says which domain it belongs to, how "
    "hard it probably is, and whether it tries to subvert the system prompt. All of this must happen in well "
    "under a millisecond, because the router sits in front of every request and a slow router is a bottleneck "
    "for the whole fleet. Static token embeddings make that possible: the vector of a text is the normalised "
    "sum of the vectors of its word pieces, looked up in a table distilled from a transformer, so the cost "
    "grows with the number of tokens and not with the square of it. The transformer itself remains available "
    "where accuracy matters more than time, for example when a policy sends expensive traffic to a premium pool "
    "only if a classifier is confident. Measurements are taken on one core, with tokenisation included, "
    "because that is what a router replica pays per request. The semantic cache uses the same vectors to "
    "recognise a question it has already answered, within a scope that includes the policy, the tenant and "
    "the sampling parameters, and it must never mistake two long prompts that differ only at their end for "
    "the same prompt. Selection by learned preference uses them to estimate which model will answer best for "
    "the price. Each of these uses is optional and runs only when a candidate decision needs it, at most once "
    "per request, off the event loop, so that one request's inference never delays another request's "
    "rules-only route. When a classifier fails, the signal is degraded and the trace says so, but the request "
    "is still routed unless the policy insists otherwise. Operators read the decision, the signals and their "
    "timings in the trace, and the benchmark reports the same numbers for every encoder at several lengths. "
) * 3


def bench_text(encoder: Encoder, tokens: int) -> str:
    """A prefix of _PROSE with exactly `tokens` word pieces under the encoder's tokenizer."""
    ids = encoder._tokenizer.encode(_PROSE, add_special_tokens=False).ids
    if len(ids) < tokens:
        raise ValueError(f"the benchmark text has only {len(ids)} word pieces")
    text = encoder._tokenizer.decode(ids[:tokens])
    got = len(encoder._tokenizer.encode(text, add_special_tokens=False).ids)
    if got != tokens:
        raise ValueError(f"benchmark text of {tokens} word pieces re-tokenises to {got}")
    return text


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    """Pin this process to one CPU for the measurement (where the OS allows it)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _time_calls(encoder: Encoder, text: str, reps: int) -> list[float]:
    for _ in range(3):
        encoder.encode_one(text)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        encoder.encode_one(text)
        out.append(time.perf_counter() - t0)
    return out


def encoder_latencies(models: Path, encoders: Sequence[str] = ENCODER_NAMES, reps: int = 300) -> dict[str, object]:
    """{"encoders": {name: {"32"|"128"|"512": {"p50_ms", "p99_ms"}}}, "default_encoder": name, ...}.
    The static encoder gets `reps` calls per length; a transformer, which is ~100x slower, a tenth of them
    (at least 10)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    windows: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    with one_cpu():
        for name in encoders:
            encoder = load_encoder(name, models)
            n = reps if encoder.kind == "static" else max(10, reps // 10)
            counts[name] = n
            table[name], windows[name] = {}, {}
            for tokens in LENGTHS:
                text = bench_text(encoder, tokens)
                sample = _time_calls(encoder, text, n)
                table[name][str(tokens)] = {"p50_ms": round(statistics.median(sample) * 1e3, 4),
                                            "p99_ms": round(percentile(sample, 0.99) * 1e3, 4)}
                windows[name][str(tokens)] = len(encoder.token_ids(text))
    return {"default_encoder": DEFAULT_ENCODER, "encoders": table, "encoder_windows": windows,
            "encoder_calls": counts}


def _print_encoders(report: dict[str, object]) -> None:
    encoders: dict[str, dict[str, dict[str, float]]] = report["encoders"]  # type: ignore[assignment]
    windows: dict[str, dict[str, int]] = report["encoder_windows"]  # type: ignore[assignment]
    print("encoder latency, one core, tokenisation included (ms)")
    print(f"  {'encoder':<20}" + "".join(f"{f'{n} tok p50 / p99':>28}" for n in LENGTHS))
    for name, row in encoders.items():
        cells = []
        for n in LENGTHS:
            cell = f"{row[str(n)]['p50_ms']:.3f} / {row[str(n)]['p99_ms']:.3f}"
            if windows[name][str(n)] != n:
                cell += f" ({windows[name][str(n)]})"
            cells.append(f"{cell:>28}")
        mark = "  (default)" if name == report["default_encoder"] else ""
        print(f"  {name:<20}" + "".join(cells) + mark)
    print("  (n) = word pieces the encoder saw after truncation to its window")
    default = encoders.get(str(report["default_encoder"]))
    if default:
        p50 = default["128"]["p50_ms"]
        verdict = "met" if p50 < TARGET_DEFAULT_128_P50_MS else "NOT met"
        print(f"  target: default encoder < {TARGET_DEFAULT_128_P50_MS} ms p50 at 128 tokens: {p50:.3f} ms, {verdict}")


def _print_heads(report: dict[str, object]) -> None:
    heads: dict[str, dict] = report["heads"]  # type: ignore[assignment]
    print("default heads, held-out split: the default encoder (all rows) and like for like on a fixed subset "
          "against the transformer reference")
    print(f"  {'head':<12}{'accuracy':>10}{'macro-F1':>10}{'subset rows':>13}{'subset acc':>12}"
          f"{'reference acc':>15}{'gap (points)':>14}")
    for name, h in heads.items():
        print(f"  {name:<12}{h['accuracy']:>10.3f}{h['macro_f1']:>10.3f}{h['subset_rows']:>13}"
              f"{h['subset_accuracy']:>12.3f}{h['reference_accuracy']:>15.3f}{h['gap_points']:>14.1f}")
    worst = max(h["gap_points"] for h in heads.values())
    print(f"  target: each head within 5 accuracy points of its transformer reference: worst gap {worst:.1f}, "
          f"{'met' if worst <= 5 else 'NOT met'}")


def run(args: argparse.Namespace) -> int:
    models = Path(args.models) if getattr(args, "models", None) else models_dir()
    quick = bool(getattr(args, "quick", False))
    report: dict[str, object] = {}
    try:
        report.update(encoder_latencies(models, ENCODER_NAMES, reps=60 if quick else 300))
    except EncoderError as exc:
        print(f"switchpoint bench classifiers: {exc}")
        return 1
    quick_rows = {"domain": 600, "difficulty": 600, "jailbreak": 400}
    report["heads"] = bench_heads(models, max_rows=quick_rows if quick else None)
    report["isolation"] = isolation(models, calls=1000 if quick else 4000)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        _print_encoders(report)
        print()
        _print_heads(report)
        print()
        print_isolation(report)
    return 0
