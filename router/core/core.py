"""The router core: route and settle one request, whatever front door it came through.

`route` runs the whole request path on the snapshot in force when the request arrived: the pipeline
decides (workload, signals, decision, selection, replica), then the cache answers or misses, budgets
reserve (or downgrade, or refuse), the request is admitted to the in-flight ledger and the scheduler
commits the placement; metrics and the trace record it. `settle` is what a Report does, or the end of
a response stream at the Envoy front door: the cache stores a successful answer, the bandit learns,
the budget settles at actual usage, passive health hears about the replica.

Inputs and outputs are plain data (RouteInput, Routed, Settlement, Settled); refusals are the
`Refusal` hierarchy. Front doors translate transports at the edge; `switchpoint route`, the
benchmarks and the tests drive this same object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchpoint.config.model import Pool
from switchpoint.router.budget.gate import BudgetAdmission, BudgetGate, BudgetStanding
from switchpoint.router.caching import CacheStage, CacheStep
from switchpoint.router.classifiers.bank import ModelBank
from switchpoint.router.core.answers import (
    CachedAnswer,
    Routed,
    ServedModel,
    Settled,
    Settlement,
    Target,
)
from switchpoint.router.core.snapshot import Snapshot
from switchpoint.router.frontdoors.headers import DESTINATION_HEADER, PREFILLER_HEADER
from switchpoint.router.handoff import Handoff, entry_from
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.pipeline import RoutePipeline, RouteResult, downgraded
from switchpoint.router.refusals import AlreadyExists, NotFound, Refusal
from switchpoint.router.request import RouteInput
from switchpoint.router.selecting import close_retired
from switchpoint.router.tickets import TICKET_HEADER, Ticket, TicketBudget, TicketSigner

log = logging.getLogger("switchpoint.router")


class ReplicaHealth(Protocol):
    """What settlements tell about a replica (passive health: an upstream error, a reset, a success)."""

    def record(self, address: str, ok: bool, now: float) -> None: ...


class RouterCore:
    def __init__(self, snapshot: Snapshot, pipeline: RoutePipeline, ledger: InflightLedger, metrics: RouterMetrics,
                 tracer: trace.Tracer, budgets: BudgetGate, cache: CacheStage, bank: ModelBank | None = None,
                 health: ReplicaHealth | None = None, clock: Callable[[], float] = time.monotonic,
                 handoff: Handoff | None = None):
        self._snapshot = snapshot
        self.pipeline = pipeline
        self.scheduler = pipeline.scheduler
        self.ledger = ledger
        self.metrics = metrics
        self.tracer = tracer
        self.tracing = not isinstance(tracer, trace.NoOpTracer)
        self.budgets = budgets
        self.cache = cache
        self.bank = bank
        self.health = health
        self.clock = clock
        # without a shared handoff (tests, benches, switchpoint route): tickets of this process, settled once here
        self.handoff = handoff if handoff is not None else Handoff(TicketSigner.ephemeral(), ttl_s=ledger.ttl_s)
        self.scheduler.retain(snapshot.config)
        metrics.config_loaded(snapshot.digest)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def swap(self, snapshot: Snapshot) -> None:
        """Serve `snapshot` from now on (one reference assignment), then let go of what only the old one used:
        bandit states stop syncing and close, scheduling state of replicas and pools no longer named is
        dropped, loaded files no longer named are forgotten. Requests already running keep the old snapshot."""
        old, self._snapshot = self._snapshot, snapshot
        self.scheduler.retain(snapshot.config)
        if self.bank is not None:
            self.bank.retain(snapshot.models)
        self.metrics.config_loaded(snapshot.digest)
        await close_retired(old.selectors, snapshot.selectors)

    # -- route -------------------------------------------------------------------------------------------

    async def route(self, req: RouteInput, parent: otel_context.Context | None = None) -> Routed:
        """Decide, answer from the cache or reserve budget, admit. Raises a Refusal naming the cause."""
        started = time.perf_counter()
        try:
            if self.tracing:
                with self.tracer.start_as_current_span("switchpoint.route", context=parent,
                                                       kind=SpanKind.SERVER) as span:
                    try:
                        routed = await self._route(req, span)
                    except Refusal as refusal:
                        span.set_status(Status(StatusCode.ERROR, refusal.message))
                        span.set_attribute("switchpoint.refusal", refusal.kind)
                        raise
            else:
                routed = await self._route(req, trace.INVALID_SPAN)
        except Refusal as refusal:
            self.refused(refusal)
            raise
        self.metrics.route_timer(routed.decision, routed.pool or "cache").observe(time.perf_counter() - started)
        return routed

    def refused(self, refusal: Refusal) -> None:
        """Count a refused route (front doors call it for requests they refuse before the core sees them)."""
        self.metrics.route_errors.labels(refusal.kind).inc()

    async def _route(self, req: RouteInput, span: trace.Span) -> Routed:
        if req.request_id in self.ledger:
            raise AlreadyExists(f"request_id '{req.request_id}' is already in flight; settle it or use a new id")
        snapshot = self._snapshot
        result = await self.pipeline.route(snapshot, req)
        for name in result.board.degraded:
            self.metrics.classifier_degraded.labels(name).inc()
        step = await self._cache_stage(result, span)
        if step.hit is not None:
            return self._cached(result, step, span)
        admission = None
        if snapshot.config.budgets:
            result, admission = await self._budget_stage(snapshot, req, result, span)
        held = step.write is not None and self.handoff.hold_cache(req.request_id, step.write)
        routed = _routed(result, step.outcome, admission, self.handoff.signer.sign(
            _ticket(result, admission, held, int((time.time() + self.ledger.ttl_s) * 1000))))
        self.ledger.admit(InflightEntry(
            request_id=req.request_id,
            policy=result.policy_name,
            decision=routed.decision,
            pool=routed.pool,
            model=routed.model,
            replica=routed.replica,
            prefill_replica=routed.prefill_replica,
            workload=result.workload.label,
            span_context=span.get_span_context(),
            budget=admission,
            pricing=result.selection.candidate.pool.pricing,
            cache=step.write,
            bandit=result.bandit,
        ))
        self.scheduler.commit(result.selection.candidate, result.selection.placement)
        self.metrics.route_counter(result.policy_name, routed.decision, routed.pool, result.workload.label).inc()
        if span.is_recording():
            _annotate_route(span, result, routed)
        return routed

    async def _cache_stage(self, result: RouteResult, span: trace.Span) -> CacheStep:
        if not span.is_recording() or not result.outcome.decision.cache.enabled:
            return await self.cache.lookup(result)
        with self.tracer.start_as_current_span("switchpoint.cache") as stage:
            step = await self.cache.lookup(result)
            stage.set_attribute("switchpoint.cache.outcome", step.outcome)
            if step.reason:
                stage.set_attribute("switchpoint.cache.reason", step.reason)
            if step.hit is not None:
                stage.set_attributes({"switchpoint.cache.similarity": step.hit.similarity,
                                      "switchpoint.cache.tier": step.hit.tier,
                                      "switchpoint.cache.entry_decision": step.hit.decision,
                                      "switchpoint.cache.age_seconds": step.hit.age_s})
            return step

    def _cached(self, result: RouteResult, step: CacheStep, span: trace.Span) -> Routed:
        """A cache hit: the answer itself, no replica, no budget (it costs nothing), no settlement expected."""
        hit = step.hit
        assert hit is not None
        rid, name = result.request.request_id, result.outcome.decision.name
        routed = Routed(
            request_id=rid, policy=result.policy_name, decision=name,
            reason=f"{result.outcome.reason}; answered from the cache ({hit.tier}, similarity {hit.similarity:.3f})",
            signals=result.fired, workload=result.workload.label, cache="hit",
            cached=CachedAnswer(hit.content, hit.similarity, hit.age_s, hit.decision, hit.tier),
            headers={"x-switchpoint-request-id": rid, "x-switchpoint-decision": name},
        )
        self.metrics.route_counter(result.policy_name, name, "cache", result.workload.label).inc()
        if span.is_recording():
            span.set_attributes({"switchpoint.decision": name, "switchpoint.cache.outcome": "hit",
                                 "switchpoint.workload": result.workload.label, "switchpoint.pool": "cache"})
        return routed

    async def _budget_stage(self, snapshot: Snapshot, req: RouteInput, result: RouteResult,
                            span: trace.Span) -> tuple[RouteResult, BudgetAdmission | None]:
        def downgrade(current: RouteResult, pool: Pool, why: str) -> RouteResult:
            return downgraded(current, pool, why, self.scheduler)

        if not span.is_recording():
            return await self.budgets.admit(snapshot.config, req, result, downgrade)
        with self.tracer.start_as_current_span("switchpoint.budget") as stage:
            result, admission = await self.budgets.admit(snapshot.config, req, result, downgrade)
            if admission is not None:
                stage.set_attributes({"switchpoint.budget.outcome": admission.outcome,
                                      "switchpoint.budget.applied": [ln.instance.key for ln in admission.lines]})
                if admission.deciding:
                    stage.set_attribute("switchpoint.budget.deciding", admission.deciding.key)
            return result, admission

    # -- settle ------------------------------------------------------------------------------------------

    async def settle(self, s: Settlement, parent: otel_context.Context | None = None) -> Settled:
        """Settle a routed request, on whichever replica routed it (its in-flight entry) or any other (the
        Decision's ticket): cache write, bandit feedback, budget at actual usage, metrics, passive health.
        Exactly once across replicas: a second settlement of the same id is a no-op (`duplicate`). InvalidRequest
        for a forged, altered or another request's ticket; NotFound for an expired ticket, or without one when
        the id is not in flight here."""
        s.check()
        ticket = self.handoff.signer.open(s.ticket, s.request_id) if s.ticket else None
        entry = self.ledger.settle(s.request_id)
        if entry is None and ticket is None:
            raise NotFound(f"request_id '{s.request_id[:128]}' is not in flight here: never routed by this router, "
                           f"already settled, or expired after {self.ledger.ttl_s:g}s (to settle on any replica, "
                           "send the Decision's ticket)")
        if entry is None:
            assert ticket is not None
            entry = entry_from(ticket, self._snapshot, None)
            self.scheduler.settled_elsewhere(s.request_id)  # the routing replica lets its entry go (peer channel)
        # A request that reserved budget settles it and takes its settle-once mark in one atomic ledger call (no
        # crash window, no extra round trip); any other takes the mark on its own.
        first = None if entry.budget is None else await self.budgets.settle(
            entry.budget, s.outcome == "success", s.prompt_tokens, s.completion_tokens)
        handed_off = entry.cache is None and ticket is not None and ticket.cache
        if first is None:
            first, handed = await self.handoff.first(s.request_id, handed_off)
        else:
            handed = await self.handoff.take(s.request_id) if first and handed_off else None
        if entry.cache is not None:
            self.handoff.release(s.request_id)
        if not first:
            self.metrics.reports.labels(entry.workload, entry.decision, entry.pool, "duplicate").inc()
            return Settled(entry.decision, entry.pool, None, duplicate=True)
        if handed is not None:
            entry.cache = handed
        replica = s.replica or entry.replica
        if self.health is not None and s.outcome != "cancelled":
            self.health.record(replica, s.outcome != "error", self.clock())
        cache_write = None if entry.cache is None else await self.cache.store(
            entry.cache, s.outcome, s.response, s.completion_tokens)
        if self.tracing:
            links = [trace.Link(entry.span_context)] if entry.span_context else []
            with self.tracer.start_as_current_span("switchpoint.report", context=parent, kind=SpanKind.SERVER,
                                                   links=links) as span:
                span.set_attributes({
                    "switchpoint.request_id": entry.request_id,
                    "switchpoint.decision": entry.decision,
                    "switchpoint.pool": entry.pool,
                    "switchpoint.replica": replica,
                    "switchpoint.outcome": s.outcome,
                    "gen_ai.usage.input_tokens": s.prompt_tokens,
                    "gen_ai.usage.output_tokens": s.completion_tokens,
                    "switchpoint.ttft_ms": s.ttft_ms,
                    "switchpoint.latency_ms": s.latency_ms,
                })
                if cache_write is not None:
                    span.set_attribute("switchpoint.cache.write", cache_write)
        self._settlement_metrics(entry, s)
        if entry.bandit is not None and s.outcome != "cancelled":
            quality = s.quality if s.quality is not None else float(s.outcome == "success")
            entry.bandit.selector.feedback(entry.bandit.context, entry.bandit.model, quality)
        self.budgets.learn(entry.decision, s.outcome == "success", s.completion_tokens)
        return Settled(entry.decision, entry.pool, cache_write)

    def _settlement_metrics(self, entry: InflightEntry, s: Settlement) -> None:
        m = self.metrics
        cell = (entry.workload, entry.decision, entry.pool)
        m.reports.labels(*cell, s.outcome).inc()
        if s.outcome == "success":
            if s.ttft_ms > 0:
                m.ttft.labels(*cell).observe(s.ttft_ms / 1000)
            if s.latency_ms > 0:
                m.latency.labels(*cell).observe(s.latency_ms / 1000)
        for kind, count in (("input", s.prompt_tokens), ("output", s.completion_tokens),
                            ("cached", s.cached_tokens)):
            if count:
                m.tokens.labels(*cell, kind).inc(count)
        if entry.pricing is not None and (s.prompt_tokens or s.completion_tokens):
            m.cost.labels(*cell).inc(entry.pricing.cost(s.prompt_tokens, s.completion_tokens))

    # -- the rest of the API -----------------------------------------------------------------------------

    async def budget_status(self, tenant: str = "") -> BudgetStanding:
        return await self.budgets.status(self._snapshot.config, tenant)

    def models(self) -> list[ServedModel]:
        """What a client may ask for (`/v1/models`): the policies' aliases, then the models pools serve."""
        config = self._snapshot.config
        served = [ServedModel(alias, policy.key, "alias") for alias, policy in sorted(config.aliases.items())]
        for name, decision in sorted(config.direct.items()):
            owners = ", ".join(sorted({c.pool.key for c in decision.candidates}))
            served.append(ServedModel(name, owners, "model"))
        return served

    async def explain(self, req: RouteInput) -> RouteResult:
        """Every signal computed and the decision explained, with no side effect (`switchpoint route`)."""
        return await self.pipeline.route(self._snapshot, req, all_signals=True)

    async def sweep(self) -> None:
        """Expire in-flight entries past their TTL, give back budget leases past their period and flush queued budget
        settlements (a background task)."""
        expired = self.ledger.expire()
        if expired:
            self.metrics.expired.inc(expired)
        self.budgets.leases.sweep()
        await self.budgets.enforcer.flush_pending()

    async def sweep_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.sweep()


def _ticket(result: RouteResult, admission: BudgetAdmission | None, cache: bool, expires_ms: int) -> Ticket:
    sel = result.selection
    pool = sel.candidate.pool
    budget = None if admission is None else TicketBudget(
        admission.reservation_id, admission.outcome,
        tuple((ln.instance.name, ln.instance.tenant, ln.units, ln.lease) for ln in admission.lines))
    bandit = None if result.bandit is None else (result.bandit.context, result.bandit.model)
    return Ticket(
        request_id=result.request.request_id, expires_ms=expires_ms,
        policy=result.policy.key if result.policy is not None else "", decision=result.outcome.decision.name,
        pool=pool.name, model=sel.candidate.model, replica=sel.placement.replica.address,
        prefill_replica=sel.placement.prefill.address if sel.placement.prefill else "",
        workload=result.workload.label,
        pricing=(pool.pricing.input_per_million, pool.pricing.output_per_million, pool.pricing.currency),
        budget=budget, bandit=bandit, cache=cache)


def _routed(result: RouteResult, cache_outcome: str, admission: BudgetAdmission | None, ticket: str) -> Routed:
    sel = result.selection
    replica = sel.placement.replica.address
    prefill = sel.placement.prefill.address if sel.placement.prefill else ""
    rid, name = result.request.request_id, result.outcome.decision.name
    headers = {DESTINATION_HEADER: replica, "x-switchpoint-request-id": rid, "x-switchpoint-decision": name,
               TICKET_HEADER: ticket}
    if prefill:
        headers[PREFILLER_HEADER] = prefill
    return Routed(
        request_id=rid, policy=result.policy_name, decision=name, reason=result.outcome.reason,
        signals=result.fired, workload=result.workload.label, cache=cache_outcome,
        pool=sel.candidate.pool.name, model=sel.candidate.model, replica=replica, prefill_replica=prefill,
        fallbacks=tuple(Target(f.candidate.pool.name, f.candidate.model, f.replica.address) for f in sel.fallbacks),
        headers=headers, budget=admission, ticket=ticket,
    )


def _annotate_route(span: trace.Span, result: RouteResult, routed: Routed) -> None:
    """The three dimensions of the matrix on the Route span (GenAI semantic conventions where they exist)."""
    req = result.request
    span.set_attributes({
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": req.model,
        "gen_ai.response.model": routed.model,
        "switchpoint.request_id": req.request_id,
        "switchpoint.policy": result.policy_name,
        "switchpoint.workload": result.workload.label,
        "switchpoint.decision": routed.decision,
        "switchpoint.signals.fired": list(routed.signals),
        "switchpoint.pool": routed.pool,
        "switchpoint.hardware_class": result.selection.candidate.pool.hardware_class,
        "switchpoint.replica": routed.replica,
    })
    if req.max_tokens:
        span.set_attribute("gen_ai.request.max_tokens", req.max_tokens)
    if routed.prefill_replica:
        span.set_attribute("switchpoint.prefill_replica", routed.prefill_replica)
