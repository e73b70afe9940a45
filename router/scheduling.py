"""Choosing the replica inside a pool: least in-flight requests, ties spread round-robin.

For a pool whose replicas are split into prefill and decode roles, the decode
replica is the destination and a prefill replica is chosen the same way.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from switchpoint.config.model import Pool, Replica, Role
from switchpoint.router.inflight import InflightLedger


@dataclass(frozen=True)
class Placement:
    replica: Replica
    prefill: Replica | None
    alternatives: tuple[Replica, ...]  # other decode-capable replicas, least loaded first


def ready_replicas(pool: Pool) -> tuple[Replica, ...]:
    """Replicas that may take requests. Local mode knows only static endpoints."""
    return pool.static_replicas


class LeastInflightScheduler:
    def __init__(self, ledger: InflightLedger):
        self.ledger = ledger
        self._turn = itertools.count()

    def place(self, pool: Pool) -> Placement | None:
        """None when the pool has no replica that can decode."""
        replicas = ready_replicas(pool)
        decoders = [r for r in replicas if r.role.decodes]
        if not decoders:
            return None
        ranked = self._rank(decoders)
        prefillers = [r for r in replicas if r.role is Role.PREFILL]
        prefill = self._rank(prefillers)[0] if prefillers else None
        return Placement(ranked[0], prefill, tuple(ranked[1:]))

    def _rank(self, replicas: list[Replica]) -> list[Replica]:
        """Least loaded first; among equals, a rotating start so that ties spread evenly."""
        shift = next(self._turn) % len(replicas)
        rotated = replicas[shift:] + replicas[:shift]
        return sorted(rotated, key=lambda r: self.ledger.load(r.address))
