"""Scraping replicas' Prometheus endpoints into the FleetState.

Every pool with a `metrics` section is scraped every `intervalMs` (at most one scrape in
flight per replica; a scrape that takes longer than three intervals, with a floor of
250 ms, fails). Engine metric names come from the pool (vLLM's by default, including the
older `vllm:gpu_cache_usage_perc`); values across label sets (e.g. several model names)
are summed. A reply that is not Prometheus text counts as a failed scrape.

The scraper follows the config: each round it forgets the replicas the config no longer names,
and a scrape still in flight when its replica leaves the config is not recorded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from switchpoint.config.model import MetricsConfig, Pool, Replica, RouterConfig
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.pools import ReplicaSource, StaticReplicas, named_replicas

log = logging.getLogger("switchpoint.router.scraper")


def parse_vllm_metrics(text: str, names: MetricsConfig) -> tuple[float | None, float | None, float | None]:
    """(waiting, running, kv usage) from Prometheus text; ValueError when it is not Prometheus text."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not math.isnan(sample.value):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value

    def first(candidates: tuple[str, ...]) -> float | None:
        return next((totals[n] for n in candidates if n in totals), None)

    return first(names.waiting), first(names.running), first(names.kv_usage)


def metrics_url(replica: Replica, metrics: MetricsConfig) -> str:
    host, _, port = replica.address.rpartition(":")
    return f"http://{host}:{metrics.port or port}{metrics.path}"


class Scraper:
    def __init__(self, config: Callable[[], RouterConfig], fleet: FleetState,
                 clock: Callable[[], float] = time.monotonic, replicas: ReplicaSource | None = None):
        self.config = config
        self.fleet = fleet
        self.source = replicas or StaticReplicas()
        self.clock = clock
        self._inflight: set[str] = set()
        self._last: dict[str, float] = {}  # replica -> when its last scrape started
        # the scraped replicas of (config, versions of its scraped pools' replicas)
        self._named: tuple[RouterConfig | None, tuple[int, ...], frozenset[str]] = (None, (), frozenset())
        self._tasks: set[asyncio.Task] = set()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                tick = self._round(session)
                await asyncio.sleep(tick)

    def tracked(self) -> set[str]:
        """Replicas the scraper holds state for."""
        return set(self._last) | self._inflight

    def _current(self) -> frozenset[str]:
        """The replicas of the scraped pools in the config now serving (a scrape that ends after its replica
        left the config is not recorded)."""
        config = self.config()
        scraped = [p for p in config.pools.values() if p.metrics is not None]
        versions = tuple(self.source.version(p.key) for p in scraped)
        if self._named[0] is not config or self._named[1] != versions:
            self._named = (config, versions, named_replicas(scraped, self.source))
        return self._named[2]

    def _round(self, session: aiohttp.ClientSession) -> float:
        """Start the scrapes that are due; returns how long to sleep."""
        now = self.clock()
        tick = 1.0
        named = self._current()
        for address in [a for a in self._last if a not in named]:
            del self._last[address]
        for pool in self.config().pools.values():
            if pool.metrics is None:
                continue
            interval = pool.metrics.interval_ms / 1000
            tick = min(tick, interval)
            for replica in self.source.replicas(pool):
                due = self._last.get(replica.address, -math.inf) + interval
                if replica.address in self._inflight or now < due:
                    continue
                self._last[replica.address] = now
                self._inflight.add(replica.address)
                task = asyncio.create_task(self._scrape(session, pool, replica))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return tick

    async def _scrape(self, session: aiohttp.ClientSession, pool: Pool, replica: Replica) -> None:
        assert pool.metrics is not None
        timeout = aiohttp.ClientTimeout(total=max(0.25, 3 * pool.metrics.interval_ms / 1000))
        try:
            async with session.get(metrics_url(replica, pool.metrics), timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                text = await resp.text()
            waiting, running, kv = parse_vllm_metrics(text, pool.metrics)
            if replica.address in self._current():
                self.fleet.observe(replica.address, self.clock(), waiting, running, kv)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            if replica.address not in self._current():
                return
            self.fleet.failed(replica.address)
            failures = self.fleet.replicas[replica.address].failures
            if failures == pool.metrics.failures_to_unready:
                log.warning("replica %s of pool %s leaves rotation: %d scrapes failed (last: %s)",
                            replica.address, pool.name, failures, exc or type(exc).__name__)
        finally:
            self._inflight.discard(replica.address)
