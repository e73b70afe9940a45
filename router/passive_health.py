"""Passive health: replicas that keep failing are taken out of rotation, as Envoy's outlier detection does.

What the response path sees (an upstream connection failure, a 5xx, a reset) and what Reports say is
recorded per replica address. `consecutive_failures` failures in a row eject the replica for
`base_ejection_s` times the number of times it has been ejected (capped at `max_ejection_s`), so a
replica that keeps coming back broken stays out longer; a success resets the run of failures, and
every `base_ejection_s` spent back in rotation without an ejection forgets one past ejection. When the
ejection time is over the replica is back (Envoy's behaviour: no probe traffic, the next requests are
the probe). This works for pools with and without scraped metrics: scraping sees a dead replica only
when it has metrics to scrape.

Pure: time is passed in (`now`, monotonic seconds); the core records settlements, the scheduler's
ready filter asks `in_rotation` (or `usable`, which keeps every replica when all of them are out, as
Envoy's panic threshold does rather than refuse everything).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierPolicy:
    consecutive_failures: int = 3
    base_ejection_s: float = 5.0
    max_ejection_s: float = 300.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError(f"consecutive_failures: must be >= 1, got {self.consecutive_failures}")
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("base_ejection_s: must be > 0 and <= max_ejection_s")


@dataclass
class _Replica:
    failures: int = 0  # consecutive
    ejections: int = 0  # the multiplier of the ejection time
    ejected_until: float = 0.0
    back_since: float = 0.0  # when it last returned to rotation (for forgetting past ejections)


class PassiveHealth:
    def __init__(self, policy: OutlierPolicy | None = None):
        self.policy = policy or OutlierPolicy()
        self._replicas: dict[str, _Replica] = {}

    def record(self, address: str, ok: bool, now: float) -> None:
        """One outcome of a request served by `address` (ok: it answered; not ok: error, 5xx, reset)."""
        if not address:
            return
        r = self._replicas.get(address)
        if r is None:
            if ok:
                return  # healthy and never failed: nothing to remember
            r = self._replicas[address] = _Replica(back_since=now)
        self._forget(r, now)
        if ok:
            r.failures = 0
            if r.ejections == 0 and r.ejected_until <= now:
                del self._replicas[address]
            return
        if r.ejected_until > now:
            return  # already out: requests that were in flight when it was ejected do not extend it
        r.failures += 1
        if r.failures >= self.policy.consecutive_failures:
            r.ejections += 1
            duration = min(self.policy.base_ejection_s * r.ejections, self.policy.max_ejection_s)
            r.ejected_until = now + duration
            r.back_since = r.ejected_until
            r.failures = 0

    def _forget(self, r: _Replica, now: float) -> None:
        """One past ejection forgotten per base_ejection_s spent back in rotation."""
        if r.ejections and r.ejected_until <= now:
            calm = int((now - r.back_since) // self.policy.base_ejection_s)
            if calm > 0:
                r.ejections = max(0, r.ejections - calm)
                r.back_since += calm * self.policy.base_ejection_s

    def ejected(self, now: float) -> frozenset[str]:
        """The addresses out of rotation now (usually none: the scheduler's filter then costs nothing per replica)."""
        if not self._replicas:
            return frozenset()
        return frozenset(a for a, r in self._replicas.items() if r.ejected_until > now)

    def in_rotation(self, address: str, now: float) -> bool:
        r = self._replicas.get(address)
        return r is None or r.ejected_until <= now

    def ejected_for(self, address: str, now: float) -> float:
        """Seconds until `address` is back in rotation (0 when it is in rotation)."""
        r = self._replicas.get(address)
        return 0.0 if r is None else max(0.0, r.ejected_until - now)

    def usable(self, addresses: Iterable[str], now: float) -> list[str]:
        """The addresses in rotation; all of them when none is (panic: better a try than a refusal for all)."""
        addresses = list(addresses)
        kept = [a for a in addresses if self.in_rotation(a, now)]
        return kept or addresses

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the state of replicas no longer in any pool (a config swap)."""
        keep = set(keep)
        for address in [a for a in self._replicas if a not in keep]:
            del self._replicas[address]
