"""A simulated fleet in virtual time: engines, scrapes and arrivals as discrete events.

`switchpoint bench scheduling` uses it to run the router's production pipeline against
many workloads, rates and policies in seconds instead of hours. Every engine is the same
`Engine` the HTTP simulator runs in real time; metrics are "scraped" every
`scrape_interval_s` of virtual time into the router's FleetState, exactly what the
router's scraper would see.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchpoint.sim.engine import Engine, EngineConfig, EngineRequest


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False)


class VirtualFleet:
    def __init__(self, replicas: list[str], config: EngineConfig | None = None, scrape_interval_s: float = 0.05):
        self.engines = {addr: Engine(config) for addr in replicas}
        self.now = 0.0
        self.scrape_interval_s = scrape_interval_s
        self._events: list[_Event] = []
        self._seq = itertools.count()

    def at(self, when: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._events, _Event(when, next(self._seq), kind, payload))

    def submit(self, replica: str, req: EngineRequest) -> None:
        engine = self.engines[replica]
        engine.submit(req, self.now)
        self._kick(replica)

    def _kick(self, replica: str) -> None:
        engine = self.engines[replica]
        if engine.busy:
            return
        duration_ms = engine.start_iteration(self.now)
        if duration_ms is not None:
            self.at(self.now + duration_ms / 1000, "iteration", replica)
        else:
            wake = engine.next_ready_at(self.now)
            if wake is not None:
                self.at(wake, "wake", replica)

    def run(self, until: float, on_arrival: Callable[[Any], None], on_tokens: Callable[[list[EngineRequest]], None],
            on_scrape: Callable[[str, Engine], None]) -> None:
        """Process events up to `until` (virtual seconds); scrapes recur while there are events."""
        self.at(self.now, "scrape")
        while self._events and self._events[0].at <= until:
            event = heapq.heappop(self._events)
            self.now = event.at
            if event.kind == "arrival":
                on_arrival(event.payload)
            elif event.kind == "iteration":
                emitted = self.engines[event.payload].finish_iteration(self.now)
                on_tokens(emitted)
                self._kick(event.payload)
            elif event.kind == "wake":
                self._kick(event.payload)
            elif event.kind == "call":  # anything else that happens at a moment: payload() runs then
                event.payload()
            elif event.kind == "scrape":
                for addr, engine in self.engines.items():
                    on_scrape(addr, engine)
                if any(e.kind != "scrape" for e in self._events):
                    self.at(self.now + self.scrape_interval_s, "scrape")
