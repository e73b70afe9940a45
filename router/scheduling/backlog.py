"""The prefill work this router has sent to each replica, as a fluid queue.

Each routed request adds its uncached prompt tokens to its replica's backlog, and the
backlog drains at the replica's prefill rate. The router updates it at the moment it
decides, so a burst of requests in one scrape interval does not pile onto the replica
that looked idle at the last scrape (the herding a scraped queue length invites).
"""

from __future__ import annotations


class PrefillBacklog:
    def __init__(self) -> None:
        self._tokens: dict[str, tuple[float, float]] = {}  # replica -> (tokens, at)

    def tokens(self, replica: str, now: float, rate: float) -> float:
        tokens, at = self._tokens.get(replica, (0.0, now))
        return max(0.0, tokens - rate * (now - at))

    def add(self, replica: str, tokens: float, now: float, rate: float) -> None:
        self._tokens[replica] = (self.tokens(replica, now, rate) + tokens, now)
