"""A client of the gateway, as users call it: the official openai SDK against `switchpoint gateway`.

Envoy asks the router where each request goes (ext_proc), sends it to that replica, and the router
settles it from the response it observes; the client only sees an OpenAI-compatible API and the
`x-switchpoint-*` response headers (decision, pool, model, cache). A refusal arrives as the error an
OpenAI client expects (429 with Retry-After for a spent budget, 503 when no replica is ready); a cache
hit is answered by Envoy itself, without a replica.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import openai

TOOLS = [{"type": "function", "function": {"name": "book_table", "description": "Book a restaurant table",
                                            "parameters": {"type": "object", "properties": {
                                                "people": {"type": "integer"}, "time": {"type": "string"}}}}}]


@dataclass(frozen=True)
class ChatRequest:
    text: str
    model: str = "auto"
    api_key: str = ""  # whose key (the gateway maps it to a tenant)
    max_tokens: int = 100
    tools: bool = False
    stream: bool = True
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    decision: str
    pool: str
    cache: str
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    outcome: str  # success, error, refused
    detail: str = ""


async def serve(client: openai.AsyncOpenAI, req: ChatRequest) -> Served:
    """One chat completion through the gateway, streaming or not, timed as the client sees it."""
    started = time.perf_counter()
    kwargs: dict = {"model": req.model, "max_tokens": req.max_tokens,
                    "messages": [{"role": "user", "content": req.text}], "extra_headers": req.headers}
    if req.tools:
        kwargs["tools"] = TOOLS
    try:
        if not req.stream:
            raw = await client.chat.completions.with_raw_response.create(**kwargs)
            reply = raw.parse()
            elapsed = time.perf_counter() - started
            usage = reply.usage
            return Served(raw.headers.get("x-switchpoint-decision", ""), raw.headers.get("x-switchpoint-pool", ""),
                          raw.headers.get("x-switchpoint-cache", ""), elapsed, elapsed,
                          usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0, "success")
        ttft, usage = 0.0, None
        async with client.chat.completions.with_streaming_response.create(
                stream=True, stream_options={"include_usage": True}, **kwargs) as response:
            headers = response.headers
            async for chunk in await response.parse():
                if chunk.choices and chunk.choices[0].delta.content and not ttft:
                    ttft = time.perf_counter() - started
                usage = chunk.usage or usage
    except openai.APIStatusError as exc:
        outcome = "refused" if exc.status_code in (400, 404, 429, 503) else "error"
        return Served("", "", "", 0, 0, 0, 0, outcome, f"HTTP {exc.status_code}: {_message(exc)}")
    except openai.APIError as exc:
        return Served("", "", "", 0, 0, 0, 0, "error", f"{type(exc).__name__}: {exc}")
    return Served(headers.get("x-switchpoint-decision", ""), headers.get("x-switchpoint-pool", ""),
                  headers.get("x-switchpoint-cache", ""), ttft or time.perf_counter() - started,
                  time.perf_counter() - started, usage.prompt_tokens if usage else 0,
                  usage.completion_tokens if usage else 0, "success")


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)
