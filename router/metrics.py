"""Prometheus metrics of one router.

Label values come only from the configuration (policy, decision, pool, replica)
or from fixed sets (workload class, outcome, status code), never from request
input, so the number of series is bounded by the config: at most
decisions x pools x 8 workload classes per request metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from switchpoint.config.model import Budget
from switchpoint.router.budget.cost import display
from switchpoint.router.budget.ledger import BudgetState
from switchpoint.router.scheduling.fleet import FleetState

ROUTE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
disable_created_metrics()  # the *_created series double the series count for no routing value

REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self, inflight: Callable[[], dict[str, int]], fleet: FleetState):
        self.registry = CollectorRegistry()
        r = self.registry
        self.routes = Counter("switchpoint_route_requests", "Route calls answered with a decision",
                              ["policy", "decision", "pool", "workload"], registry=r)
        self.route_errors = Counter("switchpoint_route_errors", "Route calls refused, by reason (the refusal's "
                                    "kind: invalid, not_found, unavailable, budget_exhausted, ...)", ["reason"],
                                    registry=r)
        self.route_seconds = Histogram("switchpoint_route_duration_seconds", "Time the router took to decide",
                                       ["decision", "pool"], buckets=ROUTE_BUCKETS, registry=r)
        cell = ["workload", "decision", "pool"]
        self.reports = Counter("switchpoint_reports", "Reports received", [*cell, "outcome"], registry=r)
        self.ttft = Histogram("switchpoint_request_ttft_seconds", "Time to first token, as reported",
                              cell, buckets=REQUEST_BUCKETS, registry=r)
        self.latency = Histogram("switchpoint_request_duration_seconds", "Request latency, as reported",
                                 cell, buckets=REQUEST_BUCKETS, registry=r)
        self.tokens = Counter("switchpoint_tokens", "Tokens, as reported", [*cell, "type"], registry=r)
        self.cost = Counter("switchpoint_cost_usd", "Cost of reported usage at the pool's prices (USD)", cell,
                            registry=r)
        self.config_reloads = Counter("switchpoint_config_reloads", "Config reloads, by result", ["result"], registry=r)
        self.config_info = Gauge("switchpoint_config_info", "The digest of the config in force (value 1)",
                                 ["digest"], registry=r)
        self.expired = Counter("switchpoint_inflight_expired", "Routed requests never reported before their TTL",
                               registry=r)
        self.budget_outcomes = Counter(
            "switchpoint_budget_outcomes", "Budget checks at Route, by budget and outcome (admitted, rejected, "
            "downgraded, observed, unenforced, refused)", ["budget", "outcome"], registry=r)
        self.trace_spans = Counter("switchpoint_trace_spans", "Spans ended, exported and failed to export "
                                   "(ended - exported - export_failed: queued or dropped)", ["stage"], registry=r)
        self.cache_lookups = Counter(
            "switchpoint_cache_lookups", "Semantic cache outcomes at Route (hit, miss, bypass, unavailable), by the "
            "decision whose cache it is", ["decision", "outcome"], registry=r)
        self.cache_writes = Counter(
            "switchpoint_cache_writes", "Reports considered for the cache: stored, or why not (error, truncated, "
            "pii, empty, bypass, too_large, dropped)", ["result"], registry=r)
        self.classifier_degraded = Counter(
            "switchpoint_classifier_degraded", "Classifier or similarity signals that failed or missed their "
            "deadline and counted as not fired", ["signal"], registry=r)
        self.peer_messages = Counter(
            "switchpoint_peer_messages", "Peer channel announcements (router/peering.py): sent, received from the "
            "other routers, dropped (queue full or Redis down), rejected (not ours)", ["outcome"], registry=r)
        self._standing: dict[str, tuple[Budget, BudgetState]] = {}
        r.register(_BudgetCollector(self._standing))
        r.register(_InflightCollector(inflight))
        r.register(_FleetCollector(fleet))
        self._route_counters: dict[tuple[str, ...], Counter] = {}
        self._route_timers: dict[tuple[str, ...], Histogram] = {}
        self._budget_outcomes: dict[tuple[str, str], Counter] = {}

    def route_counter(self, policy: str, decision: str, pool: str, workload: str) -> Counter:
        """The child series, cached: labels() validates and locks on every call, ~3 us on the hot path."""
        key = (policy, decision, pool, workload)
        child = self._route_counters.get(key)
        if child is None:
            child = self._route_counters[key] = self.routes.labels(*key)
        return child

    def route_timer(self, decision: str, pool: str) -> Histogram:
        key = (decision, pool)
        child = self._route_timers.get(key)
        if child is None:
            child = self._route_timers[key] = self.route_seconds.labels(*key)
        return child

    def budget_outcome(self, budget: str, outcome: str) -> None:
        key = (budget, outcome)
        child = self._budget_outcomes.get(key)
        if child is None:
            child = self._budget_outcomes[key] = self.budget_outcomes.labels(*key)
        child.inc()

    def budget_standing(self, name: str, budget: Budget, state: BudgetState) -> None:
        """Last known standing of a budget, exported at scrape time (not on every Route: four labelled gauges
        cost ~15 us per budget line); EachTenant budgets are not reported per tenant (unbounded)."""
        self._standing[name] = (budget, state)

    def config_loaded(self, digest: str) -> None:
        self.config_info.clear()
        self.config_info.labels(digest).set(1)


class _BudgetCollector(Collector):
    def __init__(self, standing: dict[str, tuple[Budget, BudgetState]]):
        self.standing = standing

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            GaugeMetricFamily("switchpoint_budget_spent", "Spent in the current window (tokens or currency)",
                              labels=["budget"]),
            GaugeMetricFamily("switchpoint_budget_reserved", "Held by requests in flight", labels=["budget"]),
            GaugeMetricFamily("switchpoint_budget_remaining", "Limit minus spent and reserved", labels=["budget"]),
            GaugeMetricFamily("switchpoint_budget_window_end_seconds",
                              "Unix time the current window (Calendar) or slice (Rolling) ends", labels=["budget"]),
        ]
        for name, (budget, st) in sorted(self.standing.items()):
            values = (display(budget, st.spent), display(budget, st.reserved), display(budget, st.remaining),
                      st.window_end_ms / 1000)
            for family, value in zip(families, values, strict=True):
                family.add_metric([name], value)
        yield from families


class _InflightCollector(Collector):
    def __init__(self, loads: Callable[[], dict[str, int]]):
        self.loads = loads

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("switchpoint_replica_inflight", "Requests routed to a replica and not yet reported",
                                   labels=["replica"])
        for replica, count in sorted(self.loads().items()):
            family.add_metric([replica], count)
        yield family


class _FleetCollector(Collector):
    """What the scraper last saw of each replica (only replicas of pools that are scraped)."""

    def __init__(self, fleet: FleetState):
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "failures": GaugeMetricFamily("switchpoint_replica_scrape_failures",
                                          "Consecutive failed scrapes (0 when the last one succeeded)",
                                          labels=["replica"]),
            "waiting": GaugeMetricFamily("switchpoint_replica_waiting", "Scraped requests waiting",
                                         labels=["replica"]),
            "running": GaugeMetricFamily("switchpoint_replica_running", "Scraped requests running",
                                         labels=["replica"]),
            "kv_usage": GaugeMetricFamily("switchpoint_replica_kv_cache_usage", "Scraped KV-cache use (0-1)",
                                          labels=["replica"]),
        }
        for address, m in sorted(self.fleet.replicas.items()):
            families["failures"].add_metric([address], m.failures)
            for key in ("waiting", "running", "kv_usage"):
                value = getattr(m, key)
                if value is not None:
                    families[key].add_metric([address], value)
        yield from families.values()
