"""Scorers: each maps the candidate replicas to scores in [0, 1] (higher is better). Pure functions.

A ScoringInput carries, per candidate replica, what the router knows: scraped metrics (None
when stale or not scraped), its own in-flight count, its prefill backlog (tokens), and the
prompt tokens the replica would have to prefill for this request (its approximate prefix
match taken off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchpoint.router.scheduling.fleet import ReplicaMetrics

ITERATION_S = 0.010  # one engine iteration: the floor of any predicted latency


@dataclass(frozen=True, slots=True)
class ReplicaFacts:
    address: str
    metrics: ReplicaMetrics | None
    inflight: int
    backlog_tokens: float
    prefix_blocks: int  # leading blocks believed cached
    total_blocks: int
    uncached_tokens: int  # prompt tokens this replica would prefill


@dataclass(frozen=True)
class ScoringInput:
    replicas: Sequence[ReplicaFacts]
    prefill_tokens_per_second: float


Scorer = Callable[[ScoringInput], list[float]]


def _lower_is_better(values: list[float]) -> list[float]:
    """(max - v) / (max - min); all equal -> 1 (GIE's queue-scorer normalisation)."""
    hi, lo = max(values), min(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def queue(x: ScoringInput) -> list[float]:
    """Scraped `num_requests_waiting`."""
    return _lower_is_better([(f.metrics.waiting or 0.0) if f.metrics else 0.0 for f in x.replicas])


def kv_cache(x: ScoringInput) -> list[float]:
    """1 - scraped KV-cache use."""
    return [1.0 - min(1.0, max(0.0, (f.metrics.kv_usage or 0.0) if f.metrics else 0.0)) for f in x.replicas]


def prefix_cache(x: ScoringInput) -> list[float]:
    """Share of the request's blocks believed cached on the replica."""
    return [f.prefix_blocks / f.total_blocks if f.total_blocks else 0.0 for f in x.replicas]


def least_request(x: ScoringInput) -> list[float]:
    """The router's own in-flight requests per replica."""
    return _lower_is_better([float(f.inflight) for f in x.replicas])


def inflight_tokens(x: ScoringInput) -> list[float]:
    """The prefill backlog the router has sent and not yet seen drain."""
    return _lower_is_better([f.backlog_tokens for f in x.replicas])


def predicted_ttft_s(f: ReplicaFacts, rate: float) -> float:
    """Time to first token if sent there: the backlog ahead, then this request's uncached prompt."""
    return ITERATION_S + (f.backlog_tokens + f.uncached_tokens) / rate


def predicted_latency(x: ScoringInput) -> list[float]:
    """Best predicted TTFT over this replica's, in (0, 1]: load and prefix affinity in one unit, time."""
    predicted = [predicted_ttft_s(f, x.prefill_tokens_per_second) for f in x.replicas]
    best = min(predicted)
    return [best / p for p in predicted]


def decode_interference(x: ScoringInput) -> list[float]:
    """Penalise long prefills on replicas busy decoding: every running sequence there waits them out."""
    def decoding(f: ReplicaFacts) -> float:
        scraped = (f.metrics.running or 0.0) if f.metrics else 0.0
        return max(scraped, float(f.inflight))

    return _lower_is_better([f.uncached_tokens * decoding(f) for f in x.replicas])


SCORERS: dict[str, Scorer] = {
    "predicted-latency": predicted_latency,
    "decode-interference": decode_interference,
    "prefix-cache": prefix_cache,
    "queue": queue,
    "kv-cache": kv_cache,
    "least-request": least_request,
    "inflight-tokens": inflight_tokens,
}
