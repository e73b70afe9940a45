"""The gRPC front door `switchpoint.v1.Router`: Route, Report and BudgetStatus translated to and from the core.

This module is the only place that knows both the protobuf messages and the core's plain data: a
RouteRequest becomes a RouteInput (messages copied once into ChatTurns, so a long prompt is read
from the protobuf message once), a Routed becomes a Decision, a ReportRequest a Settlement, and a
Refusal a gRPC status code with the refusal's message.
"""

from __future__ import annotations

import grpc

from switchpoint.router.budget.gate import BudgetView, admission_views, budget_view
from switchpoint.router.core import Routed, RouterCore, Settlement
from switchpoint.router.core.fairness import LargeRequestGate
from switchpoint.router.refusals import InvalidRequest, Refusal
from switchpoint.router.request import ChatTurn, RequestLimits, RouteInput, Sampling, route_input
from switchpoint.router.telemetry import context_from_metadata
from switchpoint.router.wire import MalformedRequest, lenient_deserializer
from switchpoint.v1 import router_pb2

SERVICE_NAME = "switchpoint.v1.Router"

STATUS_CODES: dict[str, grpc.StatusCode] = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "budget_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}

OUTCOMES = {
    router_pb2.OUTCOME_SUCCESS: "success",
    router_pb2.OUTCOME_ERROR: "error",
    router_pb2.OUTCOME_CANCELLED: "cancelled",
    router_pb2.OUTCOME_TRUNCATED: "truncated",
}


def status_code(refusal: Refusal) -> grpc.StatusCode:
    return STATUS_CODES.get(refusal.kind, grpc.StatusCode.INTERNAL)


class RouterService:
    def __init__(self, core: RouterCore, limits: RequestLimits, gate: LargeRequestGate | None = None):
        self.core = core
        self.limits = limits
        self.gate = gate or LargeRequestGate()
        self._decode_route = lenient_deserializer(router_pb2.RouteRequest)

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Route and Report, with deserializers that turn malformed input into INVALID_ARGUMENT."""
        return {
            # Route is decoded in the handler, after the large-request gate (a 1 MB message takes a while to parse).
            "Route": grpc.unary_unary_rpc_method_handler(self.route, None, router_pb2.Decision.SerializeToString),
            "Report": grpc.unary_unary_rpc_method_handler(
                self.report, lenient_deserializer(router_pb2.ReportRequest),
                router_pb2.ReportResponse.SerializeToString),
            "BudgetStatus": grpc.unary_unary_rpc_method_handler(
                self.budget_status, lenient_deserializer(router_pb2.BudgetStatusRequest),
                router_pb2.BudgetStatusResponse.SerializeToString),
        }

    async def route(self, data: bytes, context: grpc.aio.ServicerContext) -> router_pb2.Decision:
        parent = context_from_metadata(context.invocation_metadata()) if self.core.tracing else None
        async with self.gate.turn(len(data)):
            try:
                req = route_input_from(self._decode_route(data), self.limits)
            except Refusal as refusal:
                self.core.refused(refusal)
                await context.abort(status_code(refusal), refusal.message)
            try:
                routed = await self.core.route(req, parent)
            except Refusal as refusal:
                await context.abort(status_code(refusal), refusal.message)
            return decision_message(routed)

    async def report(self, request: router_pb2.ReportRequest | MalformedRequest,
                     context: grpc.aio.ServicerContext) -> router_pb2.ReportResponse:
        parent = context_from_metadata(context.invocation_metadata()) if self.core.tracing else None
        try:
            settled = await self.core.settle(settlement_from(request), parent)
        except Refusal as refusal:
            await context.abort(status_code(refusal), refusal.message)
        return router_pb2.ReportResponse(decision=settled.decision, pool=settled.pool, duplicate=settled.duplicate)

    async def budget_status(self, request: router_pb2.BudgetStatusRequest | MalformedRequest,
                            context: grpc.aio.ServicerContext) -> router_pb2.BudgetStatusResponse:
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        assert isinstance(request, router_pb2.BudgetStatusRequest)
        standing = await self.core.budget_status(request.tenant)
        return router_pb2.BudgetStatusResponse(
            budgets=[budget_state_message(budget_view(i, s)) for i, s in standing.budgets],
            ledger_reachable=standing.ledger_reachable)


def route_input_from(request: router_pb2.RouteRequest | MalformedRequest, limits: RequestLimits) -> RouteInput:
    if isinstance(request, MalformedRequest):
        raise InvalidRequest(request.message)
    if len(request.messages) > limits.max_messages:  # before copying them
        raise InvalidRequest(f"messages: {len(request.messages)} messages; the limit is {limits.max_messages}")
    return route_input(
        model=request.model, messages=[ChatTurn(m.role, m.content) for m in request.messages], limits=limits,
        request_id=request.request_id, tenant=request.tenant, user=request.user, session=request.session,
        metadata=request.metadata, max_tokens=request.max_tokens or None, stream=request.stream,
        tools_present=request.tools_present,
        sampling=sampling_from(request.sampling) if request.HasField("sampling") else None,
        tools_json=request.tools_json,
    )


def sampling_from(msg: router_pb2.Sampling) -> Sampling:
    """proto3 optional fields: HasField tells "not given"."""
    return Sampling(
        temperature=msg.temperature if msg.HasField("temperature") else None,
        top_p=msg.top_p if msg.HasField("top_p") else None,
        seed=msg.seed if msg.HasField("seed") else None,
        stop=tuple(msg.stop),
        response_format=msg.response_format,
        n=msg.n,
    )


def settlement_from(request: router_pb2.ReportRequest | MalformedRequest) -> Settlement:
    if isinstance(request, MalformedRequest):
        raise InvalidRequest(request.message)
    if request.outcome not in OUTCOMES:
        expected = ", ".join(router_pb2.Outcome.Name(o) for o in OUTCOMES)
        raise InvalidRequest(f"outcome: required (one of {expected})")
    return Settlement(
        request_id=request.request_id, outcome=OUTCOMES[request.outcome], prompt_tokens=request.prompt_tokens,
        completion_tokens=request.completion_tokens, cached_tokens=request.cached_tokens, ttft_ms=request.ttft_ms,
        latency_ms=request.latency_ms, response=request.response, replica=request.replica,
        quality=request.quality if request.HasField("quality") else None, ticket=request.ticket,
    )


def decision_message(routed: Routed) -> router_pb2.Decision:
    msg = router_pb2.Decision(
        request_id=routed.request_id, decision=routed.decision, pool=routed.pool, model=routed.model,
        replica=routed.replica, prefill_replica=routed.prefill_replica,
        fallbacks=[router_pb2.Target(pool=f.pool, model=f.model, replica=f.replica) for f in routed.fallbacks],
        headers=routed.headers, signals=routed.signals, reason=routed.reason, policy=routed.policy,
        cache=routed.cache, ticket=routed.ticket,
    )
    if routed.cached is not None:
        c = routed.cached
        msg.cached.CopyFrom(router_pb2.CachedResponse(content=c.content, similarity=c.similarity,
                                                      age_seconds=c.age_s, entry_decision=c.entry_decision,
                                                      tier=c.tier))
    if routed.budget is not None:
        a = routed.budget
        msg.budget.CopyFrom(router_pb2.BudgetOutcome(
            outcome=a.outcome, budget=a.deciding.key if a.deciding else "",
            budgets=[budget_state_message(v) for v in admission_views(a)]))
    return msg


def budget_state_message(view: BudgetView) -> router_pb2.BudgetState:
    msg = router_pb2.BudgetState(budget=view.budget, unit=view.unit, limit=view.limit, action=view.action,
                                 request=view.request)
    if view.spent is not None:
        msg.spent, msg.reserved, msg.remaining = view.spent, view.reserved or 0.0, view.remaining or 0.0
        msg.window_ends, msg.exhausted = view.window_ends, view.exhausted
    return msg
