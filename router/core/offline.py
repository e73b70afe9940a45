"""A core for one process without servers: `switchpoint route` and the benchmarks that drive the core directly.

It is assembled from the same parts as a router's (snapshot, pipeline, cache stage, budget gate), with
no Redis: budgets are unenforced (their failurePolicy applies) and the cache lives in the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from switchpoint.router.budget.enforcer import BudgetEnforcer
from switchpoint.router.budget.gate import BudgetGate
from switchpoint.router.cache import SemanticCache, open_store
from switchpoint.router.caching import CacheStage
from switchpoint.router.classifiers.bank import ModelBank
from switchpoint.router.core.core import RouterCore
from switchpoint.router.core.snapshot import Preparer, Snapshot
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.pipeline import RoutePipeline
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selecting import SelectorBank, Selectors, close_retired
from switchpoint.router.signals.neural import SignalInference
from switchpoint.router.telemetry import tracer_from


def assemble(snapshot: Snapshot, scheduler: Scheduler, inference: SignalInference | None = None,
             bank: ModelBank | None = None) -> RouterCore:
    """A core on a scheduler of the caller's (its ledger, fleet state and clock), without Redis."""
    ledger = scheduler.ledger
    metrics = RouterMetrics(ledger.loads, scheduler.fleet)
    tracer = tracer_from(None)
    budgets = BudgetGate(BudgetEnforcer(None, reservation_ttl_s=ledger.ttl_s + 60), metrics)
    cache = CacheStage(SemanticCache(open_store(None)), inference, metrics)
    return RouterCore(snapshot, RoutePipeline(scheduler, tracer, inference), ledger, metrics, tracer, budgets, cache,
                      bank=bank)


async def offline_core(config_paths: list[str | Path], models_dir: Path | None = None,
                       classifier_threads: int = 1) -> tuple[RouterCore, Callable[[], Awaitable[None]]]:
    """The core and the coroutine function that releases it (threads, the in-process cache)."""
    bank = ModelBank(models_dir)
    snapshot = Preparer(bank, SelectorBank()).load(config_paths)
    inference = SignalInference(classifier_threads)
    core = assemble(snapshot, Scheduler(InflightLedger(), FleetState()), inference, bank)

    async def close() -> None:
        inference.close()
        await core.cache.cache.close()
        await close_retired(core.snapshot.selectors, Selectors())

    return core, close
