"""Live replica state, as scraped from each replica's Prometheus endpoint.

A replica whose scrapes fail `failures_to_unready` times in a row leaves rotation and comes
back with its first good scrape. Values older than `stale_after_ms` are not used by
scorers (they score such a replica as if it reported nothing). A pool without a
`metrics` section is never scraped: its replicas are always in rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from switchpoint.config.model import Pool, Replica


@dataclass
class ReplicaMetrics:
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    scraped_at: float = -math.inf  # last successful scrape, scheduler clock (s)
    failures: int = 0  # consecutive failed scrapes


class FleetState:
    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaMetrics] = {}

    def observe(self, address: str, now: float, waiting: float | None, running: float | None,
                kv_usage: float | None) -> None:
        m = self.replicas.setdefault(address, ReplicaMetrics())
        m.waiting, m.running, m.kv_usage, m.scraped_at, m.failures = waiting, running, kv_usage, now, 0

    def failed(self, address: str) -> None:
        self.replicas.setdefault(address, ReplicaMetrics()).failures += 1

    def ready(self, pool: Pool, replica: Replica) -> bool:
        if pool.metrics is None:
            return True
        m = self.replicas.get(replica.address)
        return m is None or m.failures < pool.metrics.failures_to_unready

    def fresh(self, pool: Pool, replica: Replica, now: float) -> ReplicaMetrics | None:
        """Scraped values young enough to trust, or None."""
        if pool.metrics is None:
            return None
        m = self.replicas.get(replica.address)
        if m is None or now - m.scraped_at > pool.metrics.stale_after_ms / 1000:
            return None
        return m
