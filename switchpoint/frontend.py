"""A reference serving frontend: what an OpenAI-compatible gateway does with a Switchpoint router.

For each request: Route (gRPC) → send the chat completion to the replica the Decision names,
with the headers it asks for (x-prefiller-host-port for disaggregated pools), streaming →
Report the outcome with usage, time to first token and latency. A refusal (budget, no
replica) is returned as the error a client would get; a cached answer (Decision.cache "hit")
is returned without touching a replica, and needs no Report. The Report carries the response
text, so the router can cache it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import aiohttp
import grpc

from switchpoint.v1 import router_pb2, router_pb2_grpc


@dataclass(frozen=True)
class Served:
    decision: str
    pool: str
    replica: str
    disaggregated: bool
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    outcome: str  # success, error, refused
    detail: str = ""


async def serve(stub: router_pb2_grpc.RouterStub, http: aiohttp.ClientSession,
                request: router_pb2.RouteRequest) -> Served:
    started = time.perf_counter()
    try:
        d = await stub.Route(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return Served("", "", "", False, 0, 0, 0, 0, "refused", f"{exc.code().name}: {exc.details()}")
    if d.cache == "hit":
        elapsed = time.perf_counter() - started
        return Served(d.decision, "cache", "", False, elapsed, elapsed, 0, 0, "success",
                      f"{d.cached.tier} hit, similarity {d.cached.similarity:.2f}")
    headers = {k: v for k, v in d.headers.items()}
    body = {"model": d.model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": m.role, "content": m.content} for m in request.messages]}
    if request.max_tokens:
        body["max_tokens"] = request.max_tokens
    ttft = 0.0
    usage: dict = {}
    text: list[str] = []
    outcome = router_pb2.OUTCOME_SUCCESS
    detail = ""
    try:
        async with http.post(f"http://{d.replica}/v1/chat/completions", json=body, headers=headers) as resp:
            if resp.status != 200:
                outcome, detail = router_pb2.OUTCOME_ERROR, f"HTTP {resp.status}: {(await resp.text())[:200]}"
            else:
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    piece = chunk["choices"][0].get("delta", {}).get("content") if chunk["choices"] else None
                    if piece:
                        ttft = ttft or time.perf_counter() - started
                        text.append(piece)
                    usage = chunk.get("usage") or usage
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome, detail = router_pb2.OUTCOME_ERROR, f"{type(exc).__name__}: {exc}"
    latency = time.perf_counter() - started
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    await stub.Report(router_pb2.ReportRequest(
        request_id=d.request_id, outcome=outcome, prompt_tokens=prompt, completion_tokens=completion,
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        ttft_ms=ttft * 1000, latency_ms=latency * 1000, replica=d.replica, response="".join(text)), timeout=10)
    return Served(d.decision, d.pool, d.replica, bool(d.prefill_replica), ttft, latency, prompt, completion,
                  "success" if outcome == router_pb2.OUTCOME_SUCCESS else "error", detail)
