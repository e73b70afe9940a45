"""OpenAI-compatible request bodies: parsed into what the core routes on, and rewritten for the upstream.

`/v1/chat/completions` (messages whose content is a string or an array of parts, tools, `stream`,
`stream_options`, `max_tokens` / `max_completion_tokens`, the sampling fields) and `/v1/completions`
(a prompt string). Parsing is pure: bytes in, a ParsedRequest or an OpenAIError naming the field out.
The body is kept as the parsed dict so the rewrite (the upstream model, `stream_options.include_usage`
for streams) re-serialises it once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from switchpoint.router.request import ROLES, ChatTurn, Sampling

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
MAX_STOP = 16


class OpenAIError(Exception):
    """A request refused before routing, as OpenAI reports it: HTTP status, message, type, param, code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_


@dataclass(frozen=True)
class ParsedRequest:
    endpoint: str  # chat | completions
    model: str
    turns: tuple[ChatTurn, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool  # the client asked for usage in the stream itself
    sampling: Sampling | None
    tools_json: str
    body: dict[str, Any]


def endpoint_of(path: str) -> str:
    """chat, completions or models for the paths this front door answers; '' for any other path."""
    bare = path.split("?", 1)[0].rstrip("/")
    return {CHAT_PATH: "chat", COMPLETIONS_PATH: "completions", MODELS_PATH: "models"}.get(bare, "")


def parse_request(endpoint: str, raw: bytes) -> ParsedRequest:
    if not raw.strip():
        raise OpenAIError(400, "the request body is empty: expected a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, f"the request body must be a JSON object, got {type(body).__name__}",
                          code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "model: required (a model or alias name as a string)", "model", "missing_model")
    turns = _chat_turns(body) if endpoint == "chat" else _prompt_turns(body)
    stream = _optional(body, "stream", bool) or False
    options = _optional(body, "stream_options", dict) or {}
    if options and not stream:
        raise OpenAIError(400, "stream_options: only allowed when stream is true", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise OpenAIError(400, "stream_options.include_usage: must be a boolean", "stream_options.include_usage")
    tools = body.get("tools") if endpoint == "chat" else None
    if tools is not None and not isinstance(tools, list):
        raise OpenAIError(400, "tools: must be an array of tool definitions", "tools")
    functions = body.get("functions") if endpoint == "chat" else None
    declared = tools or functions
    return ParsedRequest(
        endpoint=endpoint,
        model=model,
        turns=turns,
        max_tokens=_max_tokens(body),
        stream=stream,
        include_usage=include_usage,
        sampling=_sampling(body),
        tools_json=json.dumps(declared, separators=(",", ":")) if declared else "",
        body=body,
    )


def rewrite_body(req: ParsedRequest, model: str) -> bytes:
    """The body for the upstream: the routed model in `model`, and usage always reported on streams
    (`stream_options.include_usage`), so a stream's settlement never counts zero tokens."""
    body = req.body
    body["model"] = model
    if req.stream and not req.include_usage:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _chat_turns(body: dict[str, Any]) -> tuple[ChatTurn, ...]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages: required (a non-empty array of {role, content})", "messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise OpenAIError(400, f"messages[{i}]: must be an object with role and content", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise OpenAIError(400, f"messages[{i}].role: must be one of {', '.join(ROLES)}, got {role!r:.60}",
                              f"messages[{i}].role")
        turns.append(ChatTurn(role, _content_text(m.get("content"), f"messages[{i}].content", role)))
    return tuple(turns)


def _content_text(content: Any, where: str, role: str) -> str:
    """A message's text: the string itself, or the text of its parts joined by newlines (images, audio and
    files carry no text to route on). Null content is allowed where OpenAI allows it (assistant tool calls)."""
    if isinstance(content, str):
        return content
    if content is None:
        if role in ("assistant", "tool"):
            return ""
        raise OpenAIError(400, f"{where}: required for role {role}", where)
    if not isinstance(content, list):
        raise OpenAIError(400, f"{where}: must be a string or an array of content parts", where)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise OpenAIError(400, f"{where}[{j}]: must be an object with a type", f"{where}[{j}]")
        if part["type"] in ("text", "input_text", "refusal"):
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise OpenAIError(400, f"{where}[{j}].text: must be a string", f"{where}[{j}].text")
            texts.append(text)
    return "\n".join(texts)


def _prompt_turns(body: dict[str, Any]) -> tuple[ChatTurn, ...]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIError(400, "prompt: required (a string; token arrays and batches of prompts are not routed)",
                          "prompt")
    return (ChatTurn("user", prompt),)


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise OpenAIError(400, f"{name}: must be {'a boolean' if kind is bool else 'an object'}", name)
    return value


def _integer(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OpenAIError(400, f"{name}: must be an integer >= {low}, got {value!r:.40}", name)
    return value


def _max_tokens(body: dict[str, Any]) -> int | None:
    completion = _integer(body, "max_completion_tokens", 1)
    legacy = _integer(body, "max_tokens", 1)
    return completion if completion is not None else legacy


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise OpenAIError(400, f"{name}: must be a number in [{low:g}, {high:g}], got {value!r:.40}", name)
    return float(value)


def _response_format(fmt: dict[str, Any] | None) -> str:
    """The core's form: "text", "json_object", or a JSON schema's text."""
    if fmt is None:
        return ""
    if fmt["type"] == "json_schema":
        return json.dumps(fmt.get("json_schema") or {}, separators=(",", ":"), sort_keys=True)
    return fmt["type"]


def _sampling(body: dict[str, Any]) -> Sampling | None:
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stops = tuple(stop)
    else:
        raise OpenAIError(400, f"stop: must be a string or an array of at most {MAX_STOP} strings", "stop")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and isinstance(fmt.get("type"), str)):
        raise OpenAIError(400, "response_format: must be an object with a type", "response_format")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise OpenAIError(400, "seed: must be an integer", "seed")
    sampling = Sampling(
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        seed=seed,
        stop=stops,
        response_format=_response_format(fmt),
        n=_integer(body, "n", 1) or 0,
    )
    return None if sampling == Sampling() else sampling
