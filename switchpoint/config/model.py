"""The router's typed configuration, compiled from CR manifests.

Everything here is immutable: a running router swaps one RouterConfig for
another atomically on reload, and requests in flight keep the one they started with.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field


class Role(enum.Enum):
    """What a replica does in a (possibly disaggregated) pool."""

    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"

    @property
    def decodes(self) -> bool:
        return self is not Role.PREFILL

    @property
    def prefills(self) -> bool:
        return self is not Role.DECODE


@dataclass(frozen=True)
class Replica:
    address: str  # host:port
    role: Role = Role.BOTH


@dataclass(frozen=True)
class Pricing:
    input_per_million: float = 0.0
    output_per_million: float = 0.0
    currency: str = "USD"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


@dataclass(frozen=True)
class PodSelector:
    match_labels: tuple[tuple[str, str], ...]
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...]
    port: int
    role_label: str


@dataclass(frozen=True)
class MetricsConfig:
    """How the router scrapes a pool's replicas (Prometheus text format)."""

    path: str = "/metrics"
    port: int | None = None  # default: the replica's serving port
    interval_ms: int = 100
    stale_after_ms: int = 2000
    failures_to_unready: int = 3
    waiting: tuple[str, ...] = ("vllm:num_requests_waiting",)
    running: tuple[str, ...] = ("vllm:num_requests_running",)
    kv_usage: tuple[str, ...] = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True)
class Pool:
    namespace: str
    name: str
    models: tuple[str, ...]
    hardware_class: str
    context_tokens: int
    pricing: Pricing
    static_replicas: tuple[Replica, ...] = ()
    selector: PodSelector | None = None
    metrics: MetricsConfig | None = None  # None: not scraped; the router relies on its own accounting

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class TextScope(enum.Enum):
    LAST_USER = "lastUser"
    USER = "user"
    ALL = "all"


@dataclass(frozen=True)
class KeywordSignal:
    name: str
    terms: tuple[str, ...]  # lower-cased unless case-sensitive; whole-word where a term starts/ends with \w
    match_all: bool
    case_sensitive: bool
    scope: TextScope
    scan_chars: int = 4096  # the policy's textScan.maxChars: a longer text is read as its head and tail


@dataclass(frozen=True)
class RegexSignal:
    name: str
    patterns: tuple[re.Pattern[str], ...]
    match_all: bool
    scope: TextScope
    scan_chars: int = 4096  # as KeywordSignal's


class TokenCount(enum.Enum):
    PROMPT = "promptTokens"  # the latest user message
    CONTEXT = "contextTokens"  # every message plus the requested max_tokens


@dataclass(frozen=True)
class TokenRangeSignal:
    name: str
    counted: TokenCount
    min: int | None
    max: int | None


@dataclass(frozen=True)
class MetadataSignal:
    name: str
    key: str  # lower-cased
    values: frozenset[str] | None


@dataclass(frozen=True)
class TenantSignal:
    name: str
    tenants: frozenset[str]


@dataclass(frozen=True)
class ToolsSignal:
    name: str
    present: bool


@dataclass(frozen=True)
class ClassifierSignal:
    """Fires on a classifier head's output; see the CRD for the rule (labels, above, thresholds)."""

    name: str
    classifier: str  # a ClassifierSpec name of the policy
    labels: tuple[str, ...] | None  # None: the head's positive label (binary heads)
    above: float | None
    scope: TextScope


@dataclass(frozen=True)
class PiiSignal:
    name: str
    types: frozenset[str] | None  # None: any type
    scope: TextScope


@dataclass(frozen=True)
class SimilaritySignal:
    name: str
    examples: tuple[str, ...]
    threshold: float
    encoder: str
    scope: TextScope


Signal = (KeywordSignal | RegexSignal | TokenRangeSignal | MetadataSignal | TenantSignal | ToolsSignal
          | ClassifierSignal | PiiSignal | SimilaritySignal)
BUILTIN_CLASSIFIERS = ("domain", "difficulty", "jailbreak")


@dataclass(frozen=True)
class ClassifierSpec:
    """A classifier head a policy's signals use (spec.classifiers, or a built-in one)."""

    name: str
    source: str  # builtin:NAME, a directory, or a file:// / https:// URL
    thresholds: tuple[tuple[str, float], ...] = ()
    on_error: str = "Degrade"  # or Fail
    timeout_ms: int = 500
    declared_at: int | None = None  # index in spec.classifiers; None for a built-in used by name


@dataclass(frozen=True)
class SignalRule:
    signal: str


@dataclass(frozen=True)
class AllRule:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyRule:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class NotRule:
    rule: Rule


Rule = SignalRule | AllRule | AnyRule | NotRule


@dataclass(frozen=True)
class SchedulingConfig:
    """How replicas of one pool are chosen, set per pool in a RoutingPolicy."""

    profile: str = "switchpoint"
    weights: tuple[tuple[str, float], ...] = ()  # overrides of the profile's scorer weights
    min_uncached_tokens: int = 256  # disaggregate only when this many prompt tokens are not cached
    prefill_tokens_per_second: float = 5000.0  # one replica's prefill rate, for predicted latency
    chunk_tokens: int = 2048  # prompt tokens one engine step prefills (vLLM's max_num_batched_tokens)


@dataclass(frozen=True)
class Candidate:
    """A pool a decision may send to, with the upstream model name to use there."""

    pool: Pool
    model: str
    scheduling: SchedulingConfig = SchedulingConfig()


@dataclass(frozen=True)
class SelectionConfig:
    """How a decision chooses among its candidate pools (spec.decisions[].selection)."""

    algorithm: str = "static"  # a name in the selection registry (router/selectors/registry.py)
    weights: tuple[float, ...] = ()
    lam: float | None = None  # the CRD's `lambda`
    target_quality_share: float | None = None
    dataset: str | None = None
    k: int = 10
    encoder: str = "minilm-static"
    exploration: float = 1.0


@dataclass(frozen=True)
class CacheConfig:
    """The semantic cache of one decision (spec.decisions[].cache)."""

    enabled: bool = False
    similarity_threshold: float = 0.65
    ttl_seconds: int = 3600
    max_entry_bytes: int = 65536
    store_truncated: bool = False
    store_pii: bool = False
    encoder: str = "minilm-static"
    target_precision: float = 0.97  # the pair verifier's operating point (router/cache/verifier.py)


@dataclass(frozen=True)
class Objective:
    """Latency objectives of a decision's requests (spec.objective, spec.decisions[].objective).

    The placement predicts each candidate pool's TTFT on its best replica and passes over a candidate that
    would miss `ttft_ms` (router/selection.py); `max_quality_loss` bounds how much predicted quality a
    learned selector's pick may give up for it (None: any). `tpot_ms` is carried for SLO accounting."""

    ttft_ms: int | None = None
    tpot_ms: int | None = None
    max_quality_loss: float | None = None


@dataclass(frozen=True)
class Decision:
    name: str
    priority: int
    rule: Rule | None  # None for the default decision
    candidates: tuple[Candidate, ...]
    selection: SelectionConfig = SelectionConfig()
    description: str = ""
    cache: CacheConfig = CacheConfig()
    objective: Objective | None = None  # the decision's, else the policy's; None: first ready candidate


DEFAULT_DECISION = "default"
DIRECT_DECISION = "direct"


@dataclass(frozen=True)
class WorkloadRules:
    """Thresholds of the Workload classification (RoutingPolicy spec.workload)."""

    agent_header: str = "x-switchpoint-agent"
    prefill_heavy_ratio: float = 4.0
    default_output_tokens: int = 256
    warm_prefix_share: float = 0.5


@dataclass(frozen=True, eq=False)  # identity equality: cheap to hash, and each compile makes new objects
class Policy:
    namespace: str
    name: str
    aliases: tuple[str, ...]
    signals: tuple[Signal, ...]
    decisions: tuple[Decision, ...]  # sorted by priority, highest first
    default: Decision
    workload: WorkloadRules = WorkloadRules()
    classifiers: tuple[ClassifierSpec, ...] = ()  # those its signals use, built-in ones included

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Budget:
    namespace: str
    name: str
    scope_type: str
    scope_name: str | None
    team_header: str
    policy: str | None
    window_seconds: int
    window_reset: str
    limit_tokens: int | None
    token_type: str
    limit_amount: float | None
    action: str
    downgrade_to: str | None
    failure_policy: str


@dataclass(frozen=True)
class RouterConfig:
    pools: dict[str, Pool]  # by namespace/name
    policies: dict[str, Policy]  # by namespace/name
    aliases: dict[str, Policy]  # alias -> policy
    # model name -> decision over the pools serving it, for requests that name a model, not an alias
    direct: dict[str, Decision] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    digest: str = ""
