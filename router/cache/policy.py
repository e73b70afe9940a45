"""What may be read from and written to the cache: pure functions of the request, the Report and the policy.

Write on success only: an entry is made from a Report with OUTCOME_SUCCESS and a non-empty,
complete response. Never stored, because there is no answer to replay: errors and cancelled
requests. Not stored unless the decision's CacheOptions allow it: truncated responses (length
limit, dropped stream), refusals, and exchanges the PII signal flagged.

A request opts out with the metadata (header) `x-switchpoint-cache`:
  bypass   neither read nor write (both ways)
  no-store read, never write this exchange
  refresh  do not read; write the fresh answer (replaces a stale entry)
`cache-control: no-store` is honoured as bypass, `cache-control: no-cache` as refresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from switchpoint.router.cache.scope import Sampling, as_sampling
from switchpoint.router.cache.verifier import DEFAULT_TARGET_PRECISION, check_target

CACHE_HEADER = "x-switchpoint-cache"

# Chosen on the development pairs (data/cache/pairs.jsonl) with the default encoder (minilm-static), the guard and
# the pair verifier at its default target precision: the threshold with the highest paraphrase hit rate whose hit
# precision is at least 0.95 on the pairs and 0.8 with every pair's first text stored in one scope (lower thresholds
# let unrelated questions of the same shape answer each other). `switchpoint bench cache` re-derives it and reports
# data/cache/heldout.jsonl. Cosines of a static encoder run lower than a transformer's: 0.65 here is not loose.
DEFAULT_THRESHOLD = 0.65
DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024

# Report outcomes (switchpoint.v1.Outcome values; kept here so this module stays a pure function of plain values).
OUTCOME_SUCCESS, OUTCOME_ERROR, OUTCOME_CANCELLED, OUTCOME_TRUNCATED = "success", "error", "cancelled", "truncated"


@dataclass(frozen=True)
class CacheOptions:
    """A decision's cache settings (the RoutingPolicy's cache block)."""

    threshold: float = DEFAULT_THRESHOLD  # cosine similarity a semantic hit needs; > 1 disables the vector tier
    ttl_s: float = DEFAULT_TTL_S
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES  # UTF-8 bytes of the response
    max_temperature: float | None = None  # requests sampled hotter neither read nor write; None: any
    store_truncated: bool = False
    store_refused: bool = False
    store_pii: bool = False
    target_precision: float = DEFAULT_TARGET_PRECISION  # the pair verifier's operating point (SemanticCache.lookup)

    def __post_init__(self) -> None:
        check_target(self.target_precision)


@dataclass(frozen=True)
class Directive:
    read: bool
    write: bool
    reason: str  # "" when both are allowed; else why not (for the trace): bypass, no-store, refresh, n>1, temperature


def directive(metadata: Mapping[str, str], sampling: Sampling | None, options: CacheOptions) -> Directive:
    """Whether this request may read and write the cache (metadata keys are lower-cased by the router);
    sampling as for cache_scope()."""
    flag = metadata.get(CACHE_HEADER, "").strip().lower()
    control = {part.strip() for part in metadata.get("cache-control", "").lower().split(",")}
    if flag == "bypass" or "no-store" in control:
        return Directive(False, False, "bypass")
    s = as_sampling(sampling)
    if s.n > 1:
        return Directive(False, False, "n>1")
    if options.max_temperature is not None and (s.temperature if s.temperature is not None else 1.0) \
            > options.max_temperature:
        return Directive(False, False, "temperature")
    if flag == "no-store":
        return Directive(True, False, "no-store")
    if flag == "refresh" or "no-cache" in control:
        return Directive(False, True, "refresh")
    return Directive(True, True, "")


def storable(outcome: str, response: str, pii_flagged: bool, options: CacheOptions, *,
             refused: bool = False, write_allowed: bool = True) -> tuple[bool, str]:
    """Whether a Reported exchange becomes a cache entry, and why not (a bounded label for metrics)."""
    if not write_allowed:
        return False, "bypass"
    if outcome in (OUTCOME_ERROR, OUTCOME_CANCELLED):
        return False, "error" if outcome == OUTCOME_ERROR else "cancelled"
    if outcome == OUTCOME_TRUNCATED and not options.store_truncated:
        return False, "truncated"
    if outcome not in (OUTCOME_SUCCESS, OUTCOME_TRUNCATED):
        return False, "unknown_outcome"
    if not response.strip():
        return False, "empty"
    if refused and not options.store_refused:
        return False, "refused"
    if pii_flagged and not options.store_pii:
        return False, "pii"
    if len(response.encode("utf-8", "surrogatepass")) > options.max_entry_bytes:
        return False, "too_large"
    return True, "stored"
