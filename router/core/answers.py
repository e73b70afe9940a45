"""What the core answers, in plain data: front doors turn these into protobuf messages or HTTP responses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from switchpoint.router.budget.gate import BudgetAdmission
from switchpoint.router.frozen import frozen
from switchpoint.router.refusals import InvalidRequest

OUTCOMES = ("success", "error", "cancelled", "truncated")


@frozen
class Target:
    pool: str
    model: str
    replica: str


@frozen
class CachedAnswer:
    content: str
    similarity: float  # 1.0 for an exact-match hit
    age_s: float
    entry_decision: str  # the decision that stored the entry
    tier: str  # exact | vector


@frozen
class Routed:
    """One routing answer. On a cache hit `cached` is set, no replica is named and no settlement is expected."""

    request_id: str
    policy: str
    decision: str
    reason: str
    signals: tuple[str, ...]
    workload: str
    cache: str  # hit | miss | bypass | off | unavailable
    cached: CachedAnswer | None = None
    pool: str = ""
    model: str = ""  # the model name to send upstream
    replica: str = ""  # host:port
    prefill_replica: str = ""  # set when the pool disaggregates prefill and decode
    fallbacks: tuple[Target, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # to set on the upstream request
    budget: BudgetAdmission | None = None
    ticket: str = ""  # lets any router replica settle the request (router/tickets.py); none on a cache hit


@frozen
class Settlement:
    """What happened to a routed request (a Report, or the end of a response stream)."""

    request_id: str
    outcome: str  # success | error | cancelled | truncated
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_ms: float = 0.0
    latency_ms: float = 0.0
    response: str = ""  # the full response text, for the cache
    replica: str = ""  # the replica that actually served, when a fallback did
    quality: float | None = None  # feedback in [0, 1] for learning selectors
    ticket: str = ""  # the Decision's ticket: settles on a replica other than the one that routed

    def check(self) -> None:
        """InvalidRequest naming the field when the settlement cannot be right."""
        if not self.request_id:
            raise InvalidRequest("request_id: required (the id from the routing answer)")
        if self.outcome not in OUTCOMES:
            raise InvalidRequest(f"outcome: required (one of {', '.join(OUTCOMES)}), got {self.outcome!r}")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            if getattr(self, name) < 0:
                raise InvalidRequest(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("ttft_ms", "latency_ms"):
            value = getattr(self, name)
            if not value >= 0 or math.isinf(value):
                raise InvalidRequest(f"{name}: must be a finite number >= 0, got {value}")
        if self.quality is not None and not 0 <= self.quality <= 1:
            raise InvalidRequest(f"quality: must be in [0, 1], got {self.quality}")


@frozen
class Settled:
    decision: str
    pool: str
    cache_write: str | None  # stored, or why not (error, truncated, pii, ...); None when the cache was off
    duplicate: bool = False  # the request was already settled (here or on another replica): nothing was done


@dataclass(frozen=True)
class ServedModel:
    """A name a client may put in `model`: a policy alias or a model a pool serves."""

    name: str
    owned_by: str  # the RoutingPolicy (namespace/name) or the ModelPool serving it
    kind: str  # alias | model
