"""A pool's replicas as the scheduler scores them: built once per config, not per request.

A PoolView holds the pool's static replicas in config order, their roles as boolean arrays,
and each replica's slot in the three per-replica tables (fleet state, prefill backlog,
prefix index), so a request gathers a pool's state with array indexing. Views are cached
per pool key and rebuilt when the config brings a different Pool object for that key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchpoint.config.model import Pool, Replica, Role
from switchpoint.router.scheduling.backlog import PrefillBacklog
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.prefix import PrefixIndex


@dataclass(frozen=True, eq=False)
class PoolView:
    pool: Pool
    replicas: tuple[Replica, ...]  # local mode knows only static endpoints
    addresses: tuple[str, ...]
    index: dict[str, int]  # address -> position
    positions: np.ndarray  # 0..n-1: every replica, the input of the first filter
    decodes: np.ndarray  # bool per replica
    prefill_only: np.ndarray  # bool per replica
    all_decode: bool  # no prefill-only replica: the role filters have nothing to do
    fleet_slots: np.ndarray
    backlog_slots: np.ndarray
    prefix_slots: np.ndarray


def build_view(pool: Pool, fleet: FleetState, backlog: PrefillBacklog, prefix: PrefixIndex) -> PoolView:
    replicas = pool.static_replicas
    addresses = tuple(r.address for r in replicas)
    return PoolView(
        pool, replicas, addresses, {a: i for i, a in enumerate(addresses)}, np.arange(len(replicas)),
        np.array([r.role.decodes for r in replicas], dtype=bool),
        np.array([r.role is Role.PREFILL for r in replicas], dtype=bool),
        all(r.role.decodes for r in replicas),
        fleet.table.slots(addresses), backlog.table.slots(addresses), prefix.table.slots(addresses),
    )
