"""The Envoy external processor: `envoy.service.ext_proc.v3.ExternalProcessor/Process` on the router core.

One bidirectional stream per HTTP request. Whatever processing mode the gateway configured, one
state machine answers it; the mode is read from the stream's `protocol_config`:

* FULL_DUPLEX_STREAMED (GIE's and llm-d's pickers): the request headers are held, the body is collected
  to end of stream, then the headers response (the replica in `x-gateway-destination-endpoint`,
  `clear_route_cache`) and the rewritten body in StreamedBodyResponse chunks of at most 62,000 bytes;
  response chunks are passed back as they come, read for usage on the way.
* BUFFERED (vSR): the headers get CONTINUE at once; the body response carries the header mutation, the
  rewritten body and the route; a streaming (SSE) response is switched to STREAMED with `mode_override`
  where the gateway allows it.
* STREAMED with `send_body_without_waiting_for_header_response`: as full duplex, one answer per chunk.
* An observability-mode stream (`switchpoint gateway`'s second filter): never answered; it sees the
  routed request's headers (so its request id) and the response, and settles it.

A stream whose filter sends no response body (response_body_mode NONE) leaves the settlement to an
observability stream; any other stream settles at the end of the response, or as cancelled when the
stream ends first (a client gone, a reset), so no reservation stays held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from switchpoint.router.core.answers import Routed, Settlement
from switchpoint.router.frontdoors.extproc import immediate
from switchpoint.router.frontdoors.extproc.openai import (
    OpenAIError,
    ParsedRequest,
    endpoint_of,
    parse_request,
    rewrite_body,
)
from switchpoint.router.frontdoors.extproc.settings import EXTPROC_SERVICE, PHASES_METADATA, ExtProcSettings
from switchpoint.router.frontdoors.extproc.usage import ResponseReader
from switchpoint.router.frontdoors.h2grpc import Method
from switchpoint.router.frontdoors.headers import DESTINATION_HEADER
from switchpoint.router.refusals import InvalidRequest, Refusal
from switchpoint.router.request import RequestLimits, RouteInput, route_input
from switchpoint.router.signals.tokens import estimate_tokens
from switchpoint.router.tickets import TICKET_HEADER

log = logging.getLogger("switchpoint.router.extproc")

Mode = processing_mode_pb2.ProcessingMode
REQUEST_ID_HEADER = "x-switchpoint-request-id"
METADATA_NAMESPACE = "switchpoint"  # dynamic metadata the gateway turns into response headers
LB_NAMESPACE = "envoy.lb"  # GIE: the destination also travels as dynamic metadata
HEALTH_NAMES = ("", EXTPROC_SERVICE, "liveness", "readiness")

HEADERS_CONTINUE = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
BODY_CONTINUE = pb.ProcessingResponse(request_body=pb.BodyResponse())
TRAILERS_CONTINUE = pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
RESPONSE_BODY_CONTINUE = pb.ProcessingResponse(response_body=pb.BodyResponse())
RESPONSE_TRAILERS_CONTINUE = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


class ExtProcFrontDoor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, core, settings: ExtProcSettings | None = None,  # type: ignore[no-untyped-def]
                 limits: RequestLimits | None = None):
        self.core = core
        self.settings = settings or ExtProcSettings()
        self.limits = limits or RequestLimits()
        self.health = HealthServicer()
        self._settling: set[asyncio.Task] = set()  # settlements that outlive the stream that started them

    def methods(self) -> dict[str, Method]:
        """The ExternalProcessor service and gRPC health (for "", the service name, liveness and readiness, as GIE's
        picker answers), for the port's server (router/frontdoors/h2grpc.py); call `start` once it runs."""
        return {f"/{EXTPROC_SERVICE}/Process": Method(pb.ProcessingRequest, self.Process, streaming=True),
                "/grpc.health.v1.Health/Check": Method(health_pb2.HealthCheckRequest, self.health.Check,
                                                       streaming=False)}

    async def start(self) -> None:
        for name in HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """NOT_SERVING for every name, so gateways drain before the server stops; then the settlements still
        running finish."""
        await self.health.enter_graceful_shutdown()
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=5.0)

    async def settle(self, settlement: Settlement, request_id: str) -> None:
        """Settle in a task of its own: Envoy may end the stream (gRPC then cancels its handler) as soon as the
        last response message is out, and a settlement that waits on Redis must not die with it."""
        task = asyncio.create_task(self._settle(settlement, request_id))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _settle(self, settlement: Settlement, request_id: str) -> None:
        try:
            await self.core.settle(settlement)
        except Refusal as refusal:
            log.warning("settlement of %s refused: %s", request_id[:64], refusal.message)
        except Exception:
            log.exception("settlement of %s failed", request_id[:64])

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        exchange = Exchange(self)
        request_only = _request_only(context)
        try:
            async for msg in request_iterator:
                for answer in await exchange.handle(msg):
                    yield answer
                if request_only and exchange.decided and exchange.response_mode == Mode.NONE:
                    return  # nothing of the response comes on this stream: end it with the answer (one write less)
                if exchange.response_done:  # settle once the last answer is on its way
                    await exchange.close()
                    if exchange.observer:  # Envoy holds an observability stream open for deferred_close_timeout
                        return  # unless the processor ends it; other streams Envoy closes itself
        finally:
            await exchange.close()


class Exchange:
    """One HTTP request as one ext_proc stream sees it."""

    def __init__(self, door: ExtProcFrontDoor):
        self.door = door
        self.settings = door.settings
        self.request_mode = Mode.NONE
        self.response_mode = Mode.NONE
        self.hold_headers = False  # reply to the request headers only once the body is complete
        self.observer = False
        self.headers: dict[str, str] = {}
        self.endpoint = ""
        self.body = bytearray()
        self.chunks = 0
        self.decided = False
        self.parsed: ParsedRequest | None = None
        self.request: RouteInput | None = None
        self.routed: Routed | None = None
        self.request_id = ""  # set when this stream owns the settlement
        self.ticket = ""
        self.replica = ""
        self.started = 0.0
        self.ttft_ms = 0.0
        self.status = 0
        self.reader: ResponseReader | None = None
        self.response_done = False
        self.settled = False

    # -- dispatch --------------------------------------------------------------------------------

    async def handle(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        if msg.HasField("protocol_config"):
            config = msg.protocol_config
            self.request_mode, self.response_mode = config.request_body_mode, config.response_body_mode
            self.hold_headers = self.request_mode == Mode.FULL_DUPLEX_STREAMED or (
                self.request_mode == Mode.STREAMED and config.send_body_without_waiting_for_header_response)
        if msg.observability_mode:
            self.observer = True
            if not self.request_id and msg.HasField("metadata_context"):  # request headers not sent to it
                request_id = _metadata_value(msg, METADATA_NAMESPACE, "request_id")
                if request_id:
                    self._observe(request_id, _metadata_value(msg, LB_NAMESPACE, DESTINATION_HEADER),
                                  _metadata_value(msg, METADATA_NAMESPACE, "ticket"))
        kind = msg.WhichOneof("request")
        if kind == "request_headers":
            return await self._request_headers(msg)
        if kind == "request_body":
            return await self._request_body(msg.request_body)
        if kind == "request_trailers":
            answers = await self._decide() if not self.decided and self.endpoint else []
            return [*answers, TRAILERS_CONTINUE] if not self.observer else []
        if kind == "response_headers":
            return self._response_headers(msg)
        if kind == "response_body":
            return await self._response_body(msg)
        if kind == "response_trailers":
            self.response_done = True
            return [] if self.observer else [RESPONSE_TRAILERS_CONTINUE]
        return []

    # -- request path ----------------------------------------------------------------------------

    async def _request_headers(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self.headers = _header_map(msg.request_headers.headers)
        if self.observer:
            self._observe(self.headers.get(REQUEST_ID_HEADER, ""), self.headers.get(DESTINATION_HEADER, ""),
                          self.headers.get(TICKET_HEADER, ""))
            return []
        self.endpoint = endpoint_of(self.headers.get(":path", ""))
        if self.endpoint == "models":
            return [immediate.models(self.door.core.models())]
        if not self.endpoint:
            return [self._refuse(OpenAIError(404, f"unknown path {self.headers.get(':path', '')[:200]!r}: this "
                                             "gateway serves /v1/chat/completions, /v1/completions and /v1/models",
                                             code="unknown_url"))]
        if msg.request_headers.end_of_stream:
            return [self._refuse(OpenAIError(400, "the request has no body: expected a JSON object",
                                             code="invalid_json"))]
        if self.request_mode == Mode.NONE:
            log.error("the gateway's ext_proc filter sends no request body: set request_body_mode to BUFFERED or "
                      "FULL_DUPLEX_STREAMED")
            return [self._refuse(OpenAIError(500, "the gateway is misconfigured: its ext_proc filter sends no "
                                             "request body (request_body_mode NONE)", type_="server_error"))]
        return [] if self.hold_headers else [HEADERS_CONTINUE]

    async def _request_body(self, body: pb.HttpBody) -> list[pb.ProcessingResponse]:
        if self.observer or self.decided:
            return [] if self.observer else [BODY_CONTINUE]
        self.body += body.body
        self.chunks += 1
        if len(self.body) > self.settings.max_request_bytes:
            return [self._refuse(OpenAIError(413, f"the request body is over {self.settings.max_request_bytes:,} "
                                             "bytes", code="request_too_large"))]
        buffered = self.request_mode in (Mode.BUFFERED, Mode.BUFFERED_PARTIAL)
        if not body.end_of_stream and not buffered:
            return []  # more to come; every chunk is answered once the decision is made
        return await self._decide()

    async def _decide(self) -> list[pb.ProcessingResponse]:
        self.decided = True
        try:
            parsed = parse_request(self.endpoint, bytes(self.body))
            request = self._route_input(parsed)
            routed = await self.door.core.route(request)
        except OpenAIError as exc:
            return [self._refuse(exc)]
        except Refusal as refusal:
            return [immediate.refusal(refusal)]
        except Exception:
            log.exception("routing failed")
            return [immediate.error(500, "the router failed to route this request", "server_error")]
        if routed.cached is not None:
            headers = {**routed.headers, **_response_headers(routed)}
            return [immediate.cached_answer(parsed.endpoint, parsed.model, routed.cached.content, parsed.stream,
                                            parsed.include_usage, routed.request_id, headers)]
        self.parsed, self.request, self.routed = parsed, request, routed
        if self.response_mode != Mode.NONE:  # this stream sees the response: it settles
            self._observe(routed.request_id, routed.replica, routed.ticket)
        return self._routed_answers(rewrite_body(parsed, routed.model))

    def _route_input(self, parsed: ParsedRequest) -> RouteInput:
        h, s = self.headers, self.settings
        private = set(s.private_headers)
        metadata = {k: v for k, v in h.items() if k[0] != ":" and k not in private}
        try:
            return route_input(model=parsed.model, messages=parsed.turns, limits=self.door.limits,
                               tenant=h.get(s.tenant_header, ""), user=h.get(s.user_header, ""),
                               session=h.get(s.session_header, ""), metadata=metadata,
                               max_tokens=parsed.max_tokens, stream=parsed.stream,
                               tools_present=bool(parsed.tools_json), sampling=parsed.sampling,
                               tools_json=parsed.tools_json)
        except InvalidRequest as exc:
            raise OpenAIError(400, exc.message) from None

    def _routed_answers(self, body: bytes) -> list[pb.ProcessingResponse]:
        """The route in the shape the stream's mode asks for."""
        routed = self.routed
        assert routed is not None
        common = pb.CommonResponse(clear_route_cache=True)
        immediate.set_headers(common.header_mutation, {**routed.headers, "content-length": str(len(body))})
        metadata = _dynamic_metadata(routed)
        if not self.hold_headers:  # BUFFERED: everything in the body response
            common.body_mutation.body = body
            return [pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=metadata)]
        answers = [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                         dynamic_metadata=metadata)]
        if self.request_mode == Mode.FULL_DUPLEX_STREAMED:
            answers.extend(_streamed(body, self.settings.body_chunk_bytes))
            return answers
        # STREAMED: one answer per chunk received; the first carries the whole new body.
        for i in range(self.chunks):
            mutation = pb.BodyMutation(body=body) if i == 0 else pb.BodyMutation(clear_body=True)
            answers.append(pb.ProcessingResponse(
                request_body=pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))))
        return answers

    def _refuse(self, exc: OpenAIError) -> pb.ProcessingResponse:
        self.decided = True
        if exc.status < 500:
            self.door.core.refused(InvalidRequest(exc.message))
        return immediate.error(exc.status, exc.message, exc.type, exc.param, exc.code)

    # -- response path ---------------------------------------------------------------------------

    def _observe(self, request_id: str, replica: str, ticket: str) -> None:
        """This stream settles `request_id` when the response ends (or the stream does); with the Decision's
        ticket it settles on this replica even when another one routed the request (an observer stream)."""
        self.request_id, self.replica, self.ticket = request_id, replica, ticket
        self.started = time.perf_counter()
        self.reader = ResponseReader(self.settings.max_response_bytes)

    def _response_headers(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        headers = msg.response_headers
        for h in headers.headers.headers:
            if h.key == ":status":
                self.status = int(h.raw_value or h.value or 0)
            elif h.key == "content-type" and self.reader is not None:
                self.reader.sse = (h.raw_value or h.value.encode()).startswith(b"text/event-stream")
        if headers.end_of_stream:
            self.response_done = True
        if self.observer:
            return []
        answer = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
        if self.routed is not None:
            immediate.set_headers(answer.response_headers.response.header_mutation, _response_headers(self.routed))
        if self.reader is not None and self.reader.sse and self.response_mode == Mode.BUFFERED:
            # A stream must not wait for its whole body (vSR does the same; needs allow_mode_override).
            answer.mode_override.response_body_mode = Mode.STREAMED
        return [answer]

    async def _response_body(self, msg: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        body = msg.response_body
        if not self.status and msg.attributes:  # response headers skipped: the status came as an attribute
            for values in msg.attributes.values():
                if "response.code" in values.fields:
                    self.status = int(values.fields["response.code"].number_value)
        if self.reader is not None and self.reader.feed(body.body) and not self.ttft_ms:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000
        if body.end_of_stream:
            self.response_done = True
        if self.observer:
            return []
        if self.response_mode == Mode.FULL_DUPLEX_STREAMED:
            answer = pb.ProcessingResponse()
            answer.response_body.response.body_mutation.streamed_response.body = body.body
            answer.response_body.response.body_mutation.streamed_response.end_of_stream = body.end_of_stream
            return [answer]
        return [RESPONSE_BODY_CONTINUE]

    async def close(self) -> None:
        """Settle once: at the end of the response, or as cancelled when the stream ended before it."""
        if self.settled or not self.request_id or self.reader is None:
            return
        self.settled = True
        usage = self.reader.finish()
        latency = (time.perf_counter() - self.started) * 1000
        # A stream read to its end ([DONE], or a finish_reason and usage) is complete even when the stream ended
        # before Envoy's last empty chunk: clients close the connection after [DONE].
        done = self.response_done or (bool(self.reader.sse) and usage.complete)
        outcome = _outcome(self.status, done, usage)
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        if not usage.reported and outcome != "cancelled":  # a server that never says: never count zero
            prompt = self.request.input_tokens if self.request is not None else 0
            completion = estimate_tokens(usage.text)
        settlement = Settlement(
            request_id=self.request_id, outcome=outcome, prompt_tokens=prompt, completion_tokens=completion,
            cached_tokens=usage.cached_tokens, ttft_ms=self.ttft_ms, latency_ms=latency,
            response=usage.text if outcome == "success" else "", replica=self.replica, ticket=self.ticket)
        await self.door.settle(settlement, self.request_id)


def _outcome(status: int, done: bool, usage) -> str:  # type: ignore[no-untyped-def]
    if status and not 200 <= status < 300:
        return "error"
    if not done:
        return "cancelled"
    if usage.error:
        return "error"
    if usage.overflow or not usage.complete:  # past the size kept, or a stream cut before its end
        return "truncated"
    return "success"


def _request_only(context: grpc.aio.ServicerContext) -> bool:
    """Whether the filter said it sends the request phases only (PHASES_METADATA)."""
    return any(k == PHASES_METADATA and v == "request" for k, v in context.invocation_metadata() or ())


def _header_map(headers) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {h.key: h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value for h in headers.headers}


def _response_headers(routed: Routed) -> dict[str, str]:
    return {"x-switchpoint-request-id": routed.request_id, "x-switchpoint-decision": routed.decision,
            "x-switchpoint-pool": routed.pool or "cache", "x-switchpoint-model": routed.model,
            "x-switchpoint-cache": routed.cache}


def _dynamic_metadata(routed: Routed) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update({
        LB_NAMESPACE: {DESTINATION_HEADER: routed.replica},
        METADATA_NAMESPACE: {"request_id": routed.request_id, "decision": routed.decision, "pool": routed.pool,
                             "model": routed.model, "cache": routed.cache, "ticket": routed.ticket},
    })
    return metadata


def _metadata_value(msg: pb.ProcessingRequest, namespace: str, key: str) -> str:
    values = msg.metadata_context.filter_metadata.get(namespace)
    return values.fields[key].string_value if values is not None and key in values.fields else ""


def _streamed(body: bytes, size: int) -> Iterator[pb.ProcessingResponse]:
    """A body as StreamedBodyResponse chunks of at most `size` bytes, the last one ending the stream."""
    pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    for i, piece in enumerate(pieces):
        answer = pb.ProcessingResponse()
        streamed = answer.request_body.response.body_mutation.streamed_response
        streamed.body = piece
        streamed.end_of_stream = i == len(pieces) - 1
        yield answer
