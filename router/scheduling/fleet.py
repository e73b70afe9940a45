"""Live replica state, as scraped from each replica's Prometheus endpoint.

A replica whose scrapes fail `failures_to_unready` times in a row leaves rotation and comes
back with its first good scrape. Values older than `stale_after_ms` are not used by
scorers (they score such a replica as if it reported nothing). A pool without a
`metrics` section is never scraped: its replicas are always in rotation.

The values live twice: as ReplicaMetrics per scraped replica (what /metrics shows) and in a
ReplicaTable (what the scheduler gathers per pool in one step). `retain` drops the replicas a
config no longer names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from switchpoint.config.model import Pool, Replica
from switchpoint.router.passive_health import PassiveHealth
from switchpoint.router.scheduling.table import ReplicaTable


@dataclass
class ReplicaMetrics:
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    scraped_at: float = -math.inf  # last successful scrape, scheduler clock (s)
    failures: int = 0  # consecutive failed scrapes


def _value(v: float | None) -> float:
    return math.nan if v is None else v


class FleetState:
    def __init__(self, health: PassiveHealth | None = None) -> None:
        self.health = health  # what responses and Reports said of each replica (None: not tracked)
        self.replicas: dict[str, ReplicaMetrics] = {}
        self.table = ReplicaTable(waiting=math.nan, running=math.nan, kv_usage=math.nan, scraped_at=-math.inf,
                                  failures=0.0)

    def observe(self, address: str, now: float, waiting: float | None, running: float | None,
                kv_usage: float | None) -> None:
        m = self.replicas.setdefault(address, ReplicaMetrics())
        m.waiting, m.running, m.kv_usage, m.scraped_at, m.failures = waiting, running, kv_usage, now, 0
        slot, c = self.table.slot(address), self.table.columns
        c["waiting"][slot], c["running"][slot], c["kv_usage"][slot] = _value(waiting), _value(running), _value(kv_usage)
        c["scraped_at"][slot], c["failures"][slot] = now, 0.0

    def failed(self, address: str) -> None:
        m = self.replicas.setdefault(address, ReplicaMetrics())
        m.failures += 1
        self.table.columns["failures"][self.table.slot(address)] = m.failures

    def ready(self, pool: Pool, replica: Replica) -> bool:
        if pool.metrics is None:
            return True
        m = self.replicas.get(replica.address)
        return m is None or m.failures < pool.metrics.failures_to_unready

    def ready_mask(self, pool: Pool, slots: np.ndarray) -> np.ndarray | None:
        """Which of these replicas (by table slot) are in rotation; None when all of them are."""
        if pool.metrics is None:
            return None
        ok = self.table.columns["failures"][slots] < pool.metrics.failures_to_unready
        return None if ok.all() else ok

    def fresh(self, pool: Pool, replica: Replica, now: float) -> ReplicaMetrics | None:
        """Scraped values young enough to trust, or None."""
        if pool.metrics is None:
            return None
        m = self.replicas.get(replica.address)
        if m is None or now - m.scraped_at > pool.metrics.stale_after_ms / 1000:
            return None
        return m

    def column(self, pool: Pool, slots: np.ndarray, now: float, name: str) -> np.ndarray:
        """One scraped value (waiting, running or kv_usage) of these replicas, as `fresh` would give it: 0 when
        stale, never scraped or not reported."""
        if pool.metrics is None:
            return np.zeros(len(slots))
        c = self.table.columns
        values = np.nan_to_num(c[name][slots], nan=0.0)
        values[now - c["scraped_at"][slots] > pool.metrics.stale_after_ms / 1000] = 0.0
        return values

    def passively_healthy(self, addresses: Sequence[str], positions: np.ndarray) -> np.ndarray:
        """The positions whose replica passive health keeps in rotation (consecutive failures seen in responses
        and Reports eject a replica, router/passive_health.py); all of them when none would be left (panic)."""
        ejected = self.health.ejected(time.monotonic()) if self.health is not None else frozenset()
        if not ejected:
            return positions
        keep = np.fromiter((addresses[i] not in ejected for i in positions), bool, len(positions))
        return positions[keep] if keep.any() else positions

    def retain(self, addresses: Collection[str]) -> None:
        """Forget the replicas not in `addresses`."""
        if self.health is not None:
            self.health.forget(addresses)
        for address in self.table.retain(addresses):
            self.replicas.pop(address, None)
        for address in [a for a in self.replicas if a not in addresses]:
            del self.replicas[address]
