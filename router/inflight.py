"""What this router has routed and not yet heard back about.

Route admits an entry (counting it against its replica); Report settles it.
An entry that is never reported expires after `ttl_s`, and the ledger holds at
most `max_entries` (the oldest are expired first), so a frontend that never
reports cannot grow the router's memory without bound. All methods run on the
event loop thread; none blocks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InflightEntry:
    request_id: str
    policy: str
    decision: str
    pool: str
    model: str
    replica: str
    prefill_replica: str = ""
    workload: str = ""
    span_context: Any = None  # the Route span's context, so the Report span can link to it
    budget: Any = None  # the BudgetAdmission to settle at Report, when budgets applied
    pricing: Any = None  # the pool's Pricing, for the cost of the reported usage
    cache: Any = None  # the CacheWrite that stores the Reported response, when the cache may take it
    bandit: Any = None  # the BanditFeedback of a request a bandit placed
    started: float = field(default_factory=time.monotonic)

    @property
    def replicas(self) -> tuple[str, ...]:
        return (self.replica, self.prefill_replica) if self.prefill_replica else (self.replica,)


class InflightLedger:
    def __init__(self, ttl_s: float = 600.0, max_entries: int = 100_000):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, InflightEntry] = OrderedDict()
        self._load: dict[str, int] = {}
        self.expired_total = 0
        self.on_drop: Callable[[InflightEntry], None] | None = None  # told of every entry settled or expired

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, replica: str) -> int:
        return self._load.get(replica, 0)

    def loads(self) -> dict[str, int]:
        return dict(self._load)

    def admit(self, entry: InflightEntry) -> None:
        self.expire(entry.started)
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
            self.expired_total += 1
        self._entries[entry.request_id] = entry
        for replica in entry.replicas:
            self._load[replica] = self._load.get(replica, 0) + 1

    def settle(self, request_id: str) -> InflightEntry | None:
        return self._drop(request_id) if request_id in self._entries else None

    def expire(self, now: float | None = None) -> int:
        """Forget entries older than the TTL; returns how many."""
        deadline = (time.monotonic() if now is None else now) - self.ttl_s
        count = 0
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.started > deadline:
                break
            self._drop(oldest.request_id)
            count += 1
        self.expired_total += count
        return count

    def _drop(self, request_id: str) -> InflightEntry:
        entry = self._entries.pop(request_id)
        for replica in entry.replicas:
            left = self._load.get(replica, 0) - 1
            if left > 0:
                self._load[replica] = left
            else:
                self._load.pop(replica, None)
        if self.on_drop is not None:
            self.on_drop(entry)
        return entry
