"""The prefill work this router has sent to each replica, as a fluid queue.

Each routed request adds its uncached prompt tokens to its replica's backlog, and the
backlog drains at the replica's prefill rate. The router updates it at the moment it
decides, so a burst of requests in one scrape interval does not pile onto the replica
that looked idle at the last scrape (the herding a scraped queue length invites).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from switchpoint.router.scheduling.table import ReplicaTable


class PrefillBacklog:
    def __init__(self) -> None:
        self.table = ReplicaTable(tokens=0.0, at=0.0)  # tokens owed as of `at`

    def tokens(self, replica: str, now: float, rate: float) -> float:
        """One replica's backlog, drained up to `now` (scalar arithmetic: no array for one value)."""
        slot = self.table.slot_of.get(replica)
        if slot is None:
            return 0.0
        c = self.table.columns
        return max(0.0, float(c["tokens"][slot]) - rate * (now - float(c["at"][slot])))

    def tokens_at(self, slots: np.ndarray, now: float, rate: float) -> np.ndarray:
        """The backlog of the replicas in these table slots, drained up to `now`."""
        c = self.table.columns
        return np.maximum(0.0, c["tokens"][slots] - rate * (now - c["at"][slots]))

    def add(self, replica: str, tokens: float, now: float, rate: float) -> float:
        """Queue `tokens` behind the replica's backlog; returns when they will have been prefilled."""
        slot = self.table.slot(replica)
        c = self.table.columns
        owed = c["tokens"][slot] = max(0.0, c["tokens"][slot] - rate * (now - c["at"][slot])) + tokens
        c["at"][slot] = now
        return now + float(owed) / rate

    def retain(self, addresses: Collection[str]) -> None:
        self.table.retain(addresses)
