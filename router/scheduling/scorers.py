"""Scorers: each maps the candidate replicas to scores in [0, 1] (higher is better). Pure functions.

A ScoringInput carries, per candidate replica and as numpy columns, what the router knows:
scraped metrics (0 when stale or not scraped), its own in-flight count, its prefill backlog
(tokens), and the prompt tokens the replica would have to prefill for this request (its
approximate prefix match taken off, counting only the blocks it has computed by now: a prompt sent
while the replica is still prefilling the same prefix finds nothing cached there). Columns no
scorer of the profile reads are never gathered.

Adding a scorer: a function here, registered with `@SCORERS.register("name")`, and its name in the
CRD's enum (RoutingPolicy spec.scheduling[].scorers[].name); tests/test_scheduling_registry.py
fails until both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from switchpoint.router.scheduling.registry import Registry

ITERATION_S = 0.010  # one engine iteration: the floor of any predicted latency


class _Column:
    """A per-replica column of a ScoringInput, gathered on first read (a non-data descriptor: the value then
    sits in the instance's __dict__)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, x: ScoringInput, owner: type | None = None) -> np.ndarray:
        value = x.__dict__[self.name] = x.gather(self.name)
        return value


@dataclass
class ScoringInput:
    prefill_tokens_per_second: float
    total_blocks: int  # the request's prefix blocks
    # leading blocks believed cached per replica: counted from the moment they were sent for a profile with the
    # prefix-cache scorer (GIE's view), else only those computed by now (router/scheduling/prefix.py)
    prefix_blocks: np.ndarray
    uncached_tokens: np.ndarray  # prompt tokens each replica would prefill: its blocks computed by now taken off
    gather: Callable[[str], np.ndarray]  # the column of that name, per replica; asked at most once per column

    backlog_tokens = _Column()  # prefill the router sent and has not seen drain
    waiting = _Column()  # scraped and fresh, 0 otherwise (as running and kv_usage)
    running = _Column()
    kv_usage = _Column()
    inflight = _Column()  # the router's own in-flight requests


Scorer = Callable[[ScoringInput], np.ndarray]
SCORERS: Registry[Scorer] = Registry("scorer")


def _lower_is_better(values: np.ndarray) -> np.ndarray:
    """(max - v) / (max - min); all equal -> 1 (GIE's queue-scorer normalisation)."""
    hi, lo = values.max(), values.min()
    if hi == lo:
        return np.ones(len(values))
    return (hi - values) / (hi - lo)


@SCORERS.register("queue")
def queue(x: ScoringInput) -> np.ndarray:
    """Scraped `num_requests_waiting`."""
    return _lower_is_better(x.waiting)


@SCORERS.register("kv-cache")
def kv_cache(x: ScoringInput) -> np.ndarray:
    """1 - scraped KV-cache use."""
    return 1.0 - np.minimum(np.maximum(x.kv_usage, 0.0), 1.0)  # np.clip costs twice as much on a few values


@SCORERS.register("prefix-cache")
def prefix_cache(x: ScoringInput) -> np.ndarray:
    """Share of the request's blocks believed cached on the replica."""
    if not x.total_blocks:
        return np.zeros(len(x.prefix_blocks))
    return x.prefix_blocks / x.total_blocks


@SCORERS.register("least-request")
def least_request(x: ScoringInput) -> np.ndarray:
    """The router's own in-flight requests per replica."""
    return _lower_is_better(x.inflight)


@SCORERS.register("inflight-tokens")
def inflight_tokens(x: ScoringInput) -> np.ndarray:
    """The prefill backlog the router has sent and not yet seen drain."""
    return _lower_is_better(x.backlog_tokens)


def predicted_ttft_s(backlog_tokens: np.ndarray, uncached_tokens: np.ndarray, rate: float) -> np.ndarray:
    """Time to first token if sent there: the backlog ahead, then this request's uncached prompt."""
    return ITERATION_S + (backlog_tokens + uncached_tokens) / rate


@SCORERS.register("predicted-latency")
def predicted_latency(x: ScoringInput) -> np.ndarray:
    """Best predicted TTFT over this replica's, in (0, 1]: load and prefix affinity in one unit, time."""
    predicted = predicted_ttft_s(x.backlog_tokens, x.uncached_tokens, x.prefill_tokens_per_second)
    return np.minimum.reduce(predicted) / predicted


@SCORERS.register("decode-interference")
def decode_interference(x: ScoringInput) -> np.ndarray:
    """Penalise long prefills on replicas busy decoding: every running sequence there waits them out."""
    return _lower_is_better(x.uncached_tokens * np.maximum(x.running, x.inflight))
