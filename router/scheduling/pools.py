"""A pool's replicas as the scheduler scores them: built once per config, not per request.

A PoolView holds the pool's replicas in order, their roles as boolean arrays, and each
replica's slot in the three per-replica tables (fleet state, prefill backlog, prefix index),
so a request gathers a pool's state with array indexing. Views are cached per pool key and
rebuilt when the config brings a different Pool object for that key, or when the pool's
replicas change (their source's `version` moves).

Where replicas come from is a ReplicaSource: in local mode the config's static endpoints
(StaticReplicas); a router that watches pods passes its discovery, which has the same two methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from switchpoint.config.model import Pool, Replica, Role
from switchpoint.router.scheduling.backlog import PrefillBacklog
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.prefix import PrefixIndex


class ReplicaSource(Protocol):
    def replicas(self, pool: Pool) -> tuple[Replica, ...]: ...

    def version(self, pool_key: str) -> int:
        """Grows whenever the pool's replicas change."""
        ...


class StaticReplicas:
    """A pool's replicas are its static endpoints (local mode)."""

    def replicas(self, pool: Pool) -> tuple[Replica, ...]:
        return pool.static_replicas

    def version(self, pool_key: str) -> int:
        return 0


def named_replicas(pools: Iterable[Pool], source: ReplicaSource) -> frozenset[str]:
    """The addresses of every replica of these pools."""
    return frozenset(r.address for p in pools for r in source.replicas(p))


@dataclass(frozen=True, eq=False)
class PoolView:
    pool: Pool
    version: int  # of the pool's replicas in their source
    replicas: tuple[Replica, ...]
    addresses: tuple[str, ...]
    index: dict[str, int]  # address -> position
    positions: np.ndarray  # 0..n-1: every replica, the input of the first filter
    decodes: np.ndarray  # bool per replica
    prefill_only: np.ndarray  # bool per replica
    all_decode: bool  # no prefill-only replica: the role filters have nothing to do
    fleet_slots: np.ndarray
    backlog_slots: np.ndarray
    prefix_slots: np.ndarray


def build_view(pool: Pool, source: ReplicaSource, fleet: FleetState, backlog: PrefillBacklog,
               prefix: PrefixIndex) -> PoolView:
    version = source.version(pool.key)
    replicas = source.replicas(pool)
    addresses = tuple(r.address for r in replicas)
    return PoolView(
        pool, version, replicas, addresses, {a: i for i, a in enumerate(addresses)}, np.arange(len(replicas)),
        np.array([r.role.decodes for r in replicas], dtype=bool),
        np.array([r.role is Role.PREFILL for r in replicas], dtype=bool),
        all(r.role.decodes for r in replicas),
        fleet.table.slots(addresses), backlog.table.slots(addresses), prefix.table.slots(addresses),
    )
