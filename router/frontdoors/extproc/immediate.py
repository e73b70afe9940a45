"""Immediate responses: what Envoy answers the client itself, without a replica.

OpenAI-style error bodies (`{"error": {"message", "type", "param", "code"}}`) for refusals, a cached
answer in the client's own format (a chat.completion or text_completion JSON, or server-sent events
ending in `data: [DONE]` when it asked to stream), and the model list of `/v1/models`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from switchpoint.router.refusals import BudgetExhausted, Refusal

if TYPE_CHECKING:
    from switchpoint.router.core.answers import ServedModel

# Refusal kind -> HTTP status and OpenAI error type.
REFUSAL_STATUS: dict[str, tuple[int, str]] = {
    "invalid": (400, "invalid_request_error"),
    "not_found": (404, "not_found_error"),
    "already_exists": (409, "invalid_request_error"),
    "budget_exhausted": (429, "insufficient_quota"),
    "unavailable": (503, "service_unavailable"),
    "failed_precondition": (500, "server_error"),
    "internal": (500, "server_error"),
}
JSON = "application/json"


def set_headers(mutation: pb.HeaderMutation, headers: Mapping[str, str]) -> None:
    for key, value in headers.items():
        mutation.set_headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))


def immediate(status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None,
              details: str = "") -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    answer = resp.immediate_response
    answer.status.code = status  # envoy.type.v3.StatusCode numbers are the HTTP status codes
    answer.body = body
    answer.details = details
    set_headers(answer.headers, {"content-type": content_type, **(headers or {})})
    return resp


def error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
          headers: Mapping[str, str] | None = None) -> pb.ProcessingResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return immediate(status, json.dumps(body).encode(), JSON, headers, details=f"switchpoint_{type_}")


def refusal(r: Refusal, headers: Mapping[str, str] | None = None) -> pb.ProcessingResponse:
    """A refusal of the core as its HTTP status; a spent budget says when to retry if the window's end is known."""
    status, type_ = REFUSAL_STATUS.get(r.kind, REFUSAL_STATUS["internal"])
    extra = dict(headers or {})
    if isinstance(r, BudgetExhausted) and r.retry_after_s is not None:
        extra["retry-after"] = str(max(1, int(r.retry_after_s + 0.999)))
    return error(status, r.message, type_, code=r.kind, headers=extra)


def cached_answer(endpoint: str, model: str, content: str, stream: bool, include_usage: bool,
                  request_id: str, headers: Mapping[str, str]) -> pb.ProcessingResponse:
    """A cache hit in the client's format. Usage is zero: a cached answer spends no tokens upstream."""
    created = int(time.time())
    cid = f"chatcmpl-{request_id}" if endpoint == "chat" else f"cmpl-{request_id}"
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not stream:
        if endpoint == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": content, "finish_reason": "stop"}
            obj = "text_completion"
        body = {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage}
        return immediate(200, json.dumps(body).encode(), JSON, headers)
    obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"

    def chunk(choice: dict | None, **extra: object) -> bytes:
        body = {"id": cid, "object": obj, "created": created, "model": model,
                "choices": [choice] if choice else [], **extra}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    if endpoint == "chat":
        events = [chunk({"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}),
                  chunk({"index": 0, "delta": {}, "finish_reason": "stop"})]
    else:
        events = [chunk({"index": 0, "text": content, "finish_reason": None}),
                  chunk({"index": 0, "text": "", "finish_reason": "stop"})]
    if include_usage:
        events.append(chunk(None, usage=usage))
    events.append(b"data: [DONE]\n\n")
    return immediate(200, b"".join(events), "text/event-stream", {"cache-control": "no-cache", **headers})


def models(served: Sequence[ServedModel]) -> pb.ProcessingResponse:
    created = int(time.time())
    data = [{"id": m.name, "object": "model", "created": created, "owned_by": m.owned_by} for m in served]
    return immediate(200, json.dumps({"object": "list", "data": data}).encode(), JSON)
