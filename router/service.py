"""The gRPC Router service: Route and Report, translated to and from the pipeline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchpoint.config.model import Pool, RouterConfig
from switchpoint.router.budget.gate import BudgetAdmission, BudgetGate, outcome_message
from switchpoint.router.caching import CacheStage, CacheStep
from switchpoint.router.errors import RouteError
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.pipeline import RoutePipeline, RouteResult, downgraded
from switchpoint.router.request import InvalidRequest, RequestLimits, RouteInput, parse_route_request
from switchpoint.router.telemetry import context_from_metadata
from switchpoint.router.wire import MalformedRequest, lenient_deserializer
from switchpoint.v1 import router_pb2

log = logging.getLogger("switchpoint.router")

SERVICE_NAME = "switchpoint.v1.Router"
DESTINATION_HEADER = "x-gateway-destination-endpoint"  # Gateway API Inference Extension
PREFILLER_HEADER = "x-prefiller-host-port"  # llm-d
OUTCOMES = {
    router_pb2.OUTCOME_SUCCESS: "success",
    router_pb2.OUTCOME_ERROR: "error",
    router_pb2.OUTCOME_CANCELLED: "cancelled",
    router_pb2.OUTCOME_TRUNCATED: "truncated",
}


class ConfigHolder:
    """The config in force. Swapping is one reference assignment: a request uses the config it started with."""

    def __init__(self, config: RouterConfig):
        self.config = config


@dataclass(frozen=True)
class _Refusal:
    code: grpc.StatusCode
    message: str


class RouterService:
    def __init__(self, holder: ConfigHolder, pipeline: RoutePipeline, ledger: InflightLedger,
                 metrics: RouterMetrics, tracer: trace.Tracer, limits: RequestLimits, budgets: BudgetGate,
                 cache: CacheStage):
        self.holder = holder
        self.cache = cache
        self.budgets = budgets
        self.pipeline = pipeline
        self.ledger = ledger
        self.metrics = metrics
        self.tracer = tracer
        self.tracing = not isinstance(tracer, trace.NoOpTracer)
        self.limits = limits

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Route and Report, with deserializers that turn malformed input into INVALID_ARGUMENT."""
        return {
            "Route": grpc.unary_unary_rpc_method_handler(
                self.route, lenient_deserializer(router_pb2.RouteRequest), router_pb2.Decision.SerializeToString),
            "Report": grpc.unary_unary_rpc_method_handler(
                self.report, lenient_deserializer(router_pb2.ReportRequest),
                router_pb2.ReportResponse.SerializeToString),
            "BudgetStatus": grpc.unary_unary_rpc_method_handler(
                self.budget_status, lenient_deserializer(router_pb2.BudgetStatusRequest),
                router_pb2.BudgetStatusResponse.SerializeToString),
        }

    async def route(self, request: router_pb2.RouteRequest | MalformedRequest,
                    context: grpc.aio.ServicerContext) -> router_pb2.Decision:
        started = time.perf_counter()
        if self.tracing:
            parent = context_from_metadata(context.invocation_metadata())
            with self.tracer.start_as_current_span("switchpoint.route", context=parent, kind=SpanKind.SERVER) as span:
                answer = await self._route(request, span)
                if isinstance(answer, _Refusal):
                    span.set_status(Status(StatusCode.ERROR, answer.message))
                    span.set_attribute("rpc.grpc.status_code", answer.code.value[0])
        else:
            answer = await self._route(request, trace.INVALID_SPAN)
        if isinstance(answer, _Refusal):
            self.metrics.route_errors.labels(answer.code.name).inc()
            await context.abort(answer.code, answer.message)
        self.metrics.route_timer(answer.decision, answer.pool or "cache").observe(time.perf_counter() - started)
        return answer

    async def _route(self, request: router_pb2.RouteRequest | MalformedRequest,
                     span: trace.Span) -> router_pb2.Decision | _Refusal:
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidRequest(request.message)
            req = parse_route_request(request, self.limits)
            if req.request_id in self.ledger:
                return _Refusal(grpc.StatusCode.ALREADY_EXISTS,
                                f"request_id '{req.request_id}' is already in flight; Report it or use a new id")
            config = self.holder.config
            result = await self.pipeline.route(config, req)
            for name in result.board.degraded:
                self.metrics.classifier_degraded.labels(name).inc()
            step = await self._cache_stage(result, span)
            if step.hit is not None:
                return self._cached(result, step, span)
            admission = None
            if config.budgets:
                result, admission = await self._budget_stage(config, req, result, span)
        except InvalidRequest as exc:
            return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RouteError as exc:
            return _Refusal(exc.code, exc.message)
        decision = _decision_message(result)
        decision.cache = step.outcome
        if admission is not None:
            decision.budget.CopyFrom(outcome_message(admission))
        self.ledger.admit(InflightEntry(
            request_id=req.request_id,
            policy=result.policy_name,
            decision=decision.decision,
            pool=decision.pool,
            model=decision.model,
            replica=decision.replica,
            prefill_replica=decision.prefill_replica,
            workload=result.workload.label,
            span_context=span.get_span_context(),
            budget=admission,
            pricing=result.selection.candidate.pool.pricing,
            cache=step.write,
            bandit=result.bandit,
        ))
        self.pipeline.scheduler.commit(result.selection.candidate, result.selection.placement)
        self.metrics.route_counter(result.policy_name, decision.decision, decision.pool, result.workload.label).inc()
        if span.is_recording():
            _annotate_route(span, result, decision)
        return decision

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

    def _cached(self, result: RouteResult, step: CacheStep, span: trace.Span) -> router_pb2.Decision:
        """A cache hit: the answer itself, no replica, no budget (it costs nothing), no Report expected."""
        hit = step.hit
        assert hit is not None
        decision = router_pb2.Decision(
            request_id=result.request.request_id, decision=result.outcome.decision.name, policy=result.policy_name,
            signals=result.fired, reason=f"{result.outcome.reason}; answered from the cache ({hit.tier}, "
                                         f"similarity {hit.similarity:.3f})",
            cache="hit", headers={"x-switchpoint-request-id": result.request.request_id,
                                  "x-switchpoint-decision": result.outcome.decision.name},
            cached=router_pb2.CachedResponse(content=hit.content, similarity=hit.similarity, age_seconds=hit.age_s,
                                             entry_decision=hit.decision, tier=hit.tier),
        )
        self.metrics.route_counter(result.policy_name, decision.decision, "cache", result.workload.label).inc()
        if span.is_recording():
            span.set_attributes({"switchpoint.decision": decision.decision, "switchpoint.cache.outcome": "hit",
                                 "switchpoint.workload": result.workload.label, "switchpoint.pool": "cache"})
        return decision

    async def _budget_stage(self, config: RouterConfig, req: RouteInput, result: RouteResult,
                            span: trace.Span) -> tuple[RouteResult, BudgetAdmission | None]:
        def downgrade(current: RouteResult, pool: Pool, why: str) -> RouteResult:
            return downgraded(current, pool, why, self.pipeline.scheduler)

        if not span.is_recording():
            return await self.budgets.admit(config, req, result, downgrade)
        with self.tracer.start_as_current_span("switchpoint.budget") as stage:
            result, admission = await self.budgets.admit(config, req, result, downgrade)
            if admission is not None:
                stage.set_attributes({"switchpoint.budget.outcome": admission.outcome,
                                      "switchpoint.budget.applied": [ln.instance.key for ln in admission.lines]})
                if admission.deciding:
                    stage.set_attribute("switchpoint.budget.deciding", admission.deciding.key)
            return result, admission

    async def budget_status(self, request: router_pb2.BudgetStatusRequest | MalformedRequest,
                            context: grpc.aio.ServicerContext) -> router_pb2.BudgetStatusResponse:
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        assert isinstance(request, router_pb2.BudgetStatusRequest)
        return await self.budgets.status(self.holder.config, request.tenant)

    async def report(self, request: router_pb2.ReportRequest | MalformedRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.ReportResponse:
        refusal = self._check_report(request)
        if refusal:
            await context.abort(refusal.code, refusal.message)
        assert isinstance(request, router_pb2.ReportRequest)
        entry = self.ledger.settle(request.request_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"request_id '{request.request_id[:128]}' is not in flight here: never routed by this "
                                f"router, already reported, or expired after {self.ledger.ttl_s:g}s")
        assert entry is not None
        outcome = OUTCOMES[request.outcome]
        cache_write = None if entry.cache is None else await self.cache.store(
            entry.cache, request.outcome, request.response, request.completion_tokens)
        links = [trace.Link(entry.span_context)] if entry.span_context else []
        parent = context_from_metadata(context.invocation_metadata())
        with self.tracer.start_as_current_span("switchpoint.report", context=parent, kind=SpanKind.SERVER,
                                               links=links) as span:
            span.set_attributes({
                "switchpoint.request_id": entry.request_id,
                "switchpoint.decision": entry.decision,
                "switchpoint.pool": entry.pool,
                "switchpoint.replica": request.replica or entry.replica,
                "switchpoint.outcome": outcome,
                "gen_ai.usage.input_tokens": request.prompt_tokens,
                "gen_ai.usage.output_tokens": request.completion_tokens,
                "switchpoint.ttft_ms": request.ttft_ms,
                "switchpoint.latency_ms": request.latency_ms,
            })
            if cache_write is not None:
                span.set_attribute("switchpoint.cache.write", cache_write)
        m = self.metrics
        cell = (entry.workload, entry.decision, entry.pool)
        m.reports.labels(*cell, outcome).inc()
        if request.outcome == router_pb2.OUTCOME_SUCCESS:
            if request.ttft_ms > 0:
                m.ttft.labels(*cell).observe(request.ttft_ms / 1000)
            if request.latency_ms > 0:
                m.latency.labels(*cell).observe(request.latency_ms / 1000)
        for kind, count in (("input", request.prompt_tokens), ("output", request.completion_tokens),
                            ("cached", request.cached_tokens)):
            if count:
                m.tokens.labels(*cell, kind).inc(count)
        if entry.pricing is not None and (request.prompt_tokens or request.completion_tokens):
            m.cost.labels(*cell).inc(entry.pricing.cost(request.prompt_tokens, request.completion_tokens))
        if entry.bandit is not None and request.outcome != router_pb2.OUTCOME_CANCELLED:
            quality = request.quality if request.HasField("quality") else \
                float(request.outcome == router_pb2.OUTCOME_SUCCESS)
            entry.bandit.selector.feedback(entry.bandit.context, entry.bandit.model, quality)
        if entry.budget is not None:
            await self.budgets.settle(entry.budget, entry.decision, request.outcome == router_pb2.OUTCOME_SUCCESS,
                                      request.prompt_tokens, request.completion_tokens)
        return router_pb2.ReportResponse(decision=entry.decision, pool=entry.pool)

    def _check_report(self, request: router_pb2.ReportRequest | MalformedRequest) -> _Refusal | None:
        if isinstance(request, MalformedRequest):
            return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        if not request.request_id:
            return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "request_id: required (the id from the Decision)")
        if request.outcome not in OUTCOMES:
            expected = ", ".join(router_pb2.Outcome.Name(o) for o in OUTCOMES)
            return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"outcome: required (one of {expected})")
        for name in ("ttft_ms", "latency_ms"):
            value = getattr(request, name)
            if not value >= 0 or value == float("inf"):
                return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: must be a finite number >= 0, got {value}")
        if request.HasField("quality") and not 0 <= request.quality <= 1:
            return _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"quality: must be in [0, 1], got {request.quality}")
        return None


def _annotate_route(span: trace.Span, result: RouteResult, decision: router_pb2.Decision) -> None:
    """The three dimensions of the matrix on the Route span (GenAI semantic conventions where they exist)."""
    req = result.request
    span.set_attributes({
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": req.model,
        "gen_ai.response.model": decision.model,
        "switchpoint.request_id": req.request_id,
        "switchpoint.policy": result.policy_name,
        "switchpoint.workload": result.workload.label,
        "switchpoint.decision": decision.decision,
        "switchpoint.signals.fired": list(decision.signals),
        "switchpoint.pool": decision.pool,
        "switchpoint.hardware_class": result.selection.candidate.pool.hardware_class,
        "switchpoint.replica": decision.replica,
    })
    if req.max_tokens:
        span.set_attribute("gen_ai.request.max_tokens", req.max_tokens)
    if decision.prefill_replica:
        span.set_attribute("switchpoint.prefill_replica", decision.prefill_replica)


def _decision_message(result: RouteResult) -> router_pb2.Decision:
    sel = result.selection
    replica = sel.placement.replica.address
    prefill = sel.placement.prefill.address if sel.placement.prefill else ""
    headers = {
        DESTINATION_HEADER: replica,
        "x-switchpoint-request-id": result.request.request_id,
        "x-switchpoint-decision": result.outcome.decision.name,
    }
    if prefill:
        headers[PREFILLER_HEADER] = prefill
    return router_pb2.Decision(
        request_id=result.request.request_id,
        decision=result.outcome.decision.name,
        pool=sel.candidate.pool.name,
        model=sel.candidate.model,
        replica=replica,
        prefill_replica=prefill,
        fallbacks=[router_pb2.Target(pool=f.candidate.pool.name, model=f.candidate.model, replica=f.replica.address)
                   for f in sel.fallbacks],
        headers=headers,
        signals=result.fired,
        reason=result.outcome.reason,
        policy=result.policy_name,
    )
