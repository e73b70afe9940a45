"""A simulated model-server replica: the engine model behind an OpenAI-compatible HTTP API.

Endpoints, as vLLM serves them: POST /v1/chat/completions and /v1/completions (JSON, or
server-sent events with `stream: true`, ending with `data: [DONE]`), GET /v1/models,
GET /metrics (vLLM's metric names), GET /health. A replica runs its engine in real time:
each iteration sleeps for the duration the engine model gives it.

Disaggregated prefill as llm-d does it: a decode replica that receives the
`x-prefiller-host-port` header first has the prefill replica run the prompt (a
completions call with `kv_transfer_params.do_remote_decode` and max_tokens 1), then
decodes itself after the KV-transfer delay.

Faults for tests and demos: POST /sim/fault {"metrics": "garbage" | "hang" | null}; a hung /metrics answers once
the fault is cleared (so a stopped simulator does not wait on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from switchpoint.sim.engine import Engine, EngineConfig, EngineRequest, prompt_blocks, token_count

PREFILLER_HEADER = "x-prefiller-host-port"
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


@dataclass
class _Pending:
    request: EngineRequest
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)  # token index, None when done


class SimReplica:
    def __init__(self, model: str, role: str = "both", config: EngineConfig | None = None,
                 legacy_metrics: bool = False, default_max_tokens: int = 128):
        self.model = model
        self.role = role
        self.engine = Engine(config)
        self.legacy_metrics = legacy_metrics  # expose vllm:gpu_cache_usage_perc, as older vLLM did
        self.default_max_tokens = default_max_tokens
        self.metrics_fault: str | None = None
        self._recovered = asyncio.Event()  # set when a "hang" fault is cleared: the hung scrapes then answer
        self._pending: dict[str, _Pending] = {}
        self._work = asyncio.Event()
        self._ids = itertools.count()
        self._t0 = time.monotonic()
        self._loop_task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None
        self.success_total = 0

    def now_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000

    # -- the engine loop ------------------------------------------------------------------------
    async def run_engine(self) -> None:
        while True:
            duration = self.engine.start_iteration(self.now_ms())
            if duration is None:
                wake = self.engine.next_ready_at(self.now_ms())
                self._work.clear()
                timeout = None if wake is None else max(0.0, (wake - self.now_ms()) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), timeout)
                continue
            await asyncio.sleep(duration / 1000)
            for req in self.engine.finish_iteration(self.now_ms()):
                pending = self._pending.get(req.id)
                if pending is None:
                    continue
                if req.generated:
                    pending.tokens.put_nowait(req.generated - 1)
                if req.done:
                    pending.tokens.put_nowait(None)

    def _submit(self, req: EngineRequest) -> _Pending:
        pending = _Pending(req)
        self._pending[req.id] = pending
        self.engine.submit(req, self.now_ms())
        self._work.set()
        return pending

    # -- HTTP ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/completions", self.completions),
            web.get("/v1/models", self.models),
            web.get("/metrics", self.metrics),
            web.get("/health", lambda _: web.Response(text="ok")),
            web.post("/sim/fault", self.set_fault),
        ])
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self._loop_task = asyncio.create_task(self.run_engine())
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    async def _stop(self, _: web.Application) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        if self._http:
            await self._http.close()

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "switchpoint-sim", "max_model_len": 32768}]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await _json_body(request)
        if error:
            return error
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in messages):
            return _error(400, "messages must be a non-empty list of {role, content}", "messages")
        text = "".join(f"<|{m.get('role', 'user')}|>{m.get('content', '')}" for m in messages)
        return await self._serve(request, body, text, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await _json_body(request)
        if error:
            return error
        if not isinstance(body.get("prompt"), str):
            return _error(400, "prompt must be a string", "prompt")
        return await self._serve(request, body, body["prompt"], chat=False)

    async def _serve(self, request: web.Request, body: dict, text: str, chat: bool) -> web.StreamResponse:
        if body.get("model") not in (None, self.model):
            return _error(404, f"The model `{body.get('model')}` does not exist.", "model", "model_not_found")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or self.default_max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "max_tokens must be a positive integer", "max_tokens")
        remote_prefill = (body.get("kv_transfer_params") or {}).get("do_remote_decode", False)
        if self.role == "prefill" and not remote_prefill:
            return _error(400, "this replica only prefills (role prefill)", None)
        rid = f"sim-{next(self._ids)}"
        prompt = token_count(text)
        blocks = prompt_blocks(text, self.engine.config.block_tokens)
        prefiller = request.headers.get(PREFILLER_HEADER)
        if prefiller and not remote_prefill:
            failure = await self._remote_prefill(prefiller, text, body)
            if failure is not None:
                return failure
        req = EngineRequest(rid, prompt, 0 if remote_prefill else max_tokens, blocks,
                            kv_transferred=bool(prefiller) and not remote_prefill, prefill_only=remote_prefill)
        pending = self._submit(req)
        try:
            if body.get("stream"):
                return await self._stream(request, pending, chat, body)
            while await pending.tokens.get() is not None:
                pass
        finally:
            if not req.done:
                self.engine.abort(rid, self.now_ms())  # the client went away
            self._pending.pop(rid, None)
        self.success_total += 1
        return web.json_response(self._final(req, chat))

    async def _remote_prefill(self, prefiller: str, text: str, body: dict) -> web.Response | None:
        assert self._http is not None
        payload = {"model": body.get("model", self.model), "prompt": text, "max_tokens": 1,
                   "kv_transfer_params": {"do_remote_decode": True}}
        try:
            async with self._http.post(f"http://{prefiller}/v1/completions", json=payload) as resp:
                if resp.status != 200:
                    return _error(502, f"prefill replica {prefiller} answered {resp.status}", None)
        except aiohttp.ClientError as exc:
            return _error(502, f"prefill replica {prefiller} unreachable: {exc}", None)
        return None

    async def _stream(self, request: web.Request, pending: _Pending, chat: bool, body: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        req = pending.request
        while (index := await pending.tokens.get()) is not None:
            piece = FILLER[index % len(FILLER)] + " "
            delta = {"delta": {"content": piece}} if chat else {"text": piece}
            await resp.write(_sse(self._chunk(req, chat, {"index": 0, **delta, "finish_reason": None})))
        final = self._final(req, chat)
        last = {"index": 0, "finish_reason": final["choices"][0]["finish_reason"], **({"delta": {}} if chat else {
            "text": ""})}
        chunk = self._chunk(req, chat, last)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk["usage"] = final["usage"]
        await resp.write(_sse(chunk))
        await resp.write(b"data: [DONE]\n\n")
        self.success_total += 1
        await resp.write_eof()
        return resp

    def _chunk(self, req: EngineRequest, chat: bool, choice: dict) -> dict:
        return {"id": req.id, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": self.model, "choices": [choice]}

    def _final(self, req: EngineRequest, chat: bool) -> dict:
        text = " ".join(FILLER[i % len(FILLER)] for i in range(req.generated))
        choice = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        usage = {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.generated,
                 "total_tokens": req.prompt_tokens + req.generated,
                 "prompt_tokens_details": {"cached_tokens": req.cached_tokens}}
        return {"id": req.id, "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": self.model, "choices": [choice], "usage": usage}

    async def metrics(self, _: web.Request) -> web.Response:
        if self.metrics_fault == "hang":  # until the fault is cleared, as a replica that recovers
            await self._recovered.wait()
        if self.metrics_fault == "garbage":
            return web.Response(text="vllm:num_requests_waiting{{{ not prometheus at all\n\x00\x01")
        e = self.engine
        label = f'{{model_name="{self.model}"}}'
        kv_name = "vllm:gpu_cache_usage_perc" if self.legacy_metrics else "vllm:kv_cache_usage_perc"
        lines = [
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{label} {e.num_waiting}",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{label} {e.num_running}",
            f"# TYPE {kv_name} gauge", f"{kv_name}{label} {e.kv_usage:.6f}",
            "# TYPE vllm:cache_config_info gauge",
            f'vllm:cache_config_info{{block_size="{e.config.block_tokens}",num_gpu_blocks="{e.config.kv_blocks}",'
            f'enable_prefix_caching="True"}} 1.0',
            "# TYPE vllm:prefix_cache_queries counter", f"vllm:prefix_cache_queries_total{label} {e.prefix_queries}",
            "# TYPE vllm:prefix_cache_hits counter", f"vllm:prefix_cache_hits_total{label} {e.prefix_hits}",
            "# TYPE vllm:request_success counter", f"vllm:request_success_total{label} {self.success_total}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def set_fault(self, request: web.Request) -> web.Response:
        body, error = await _json_body(request)
        if error:
            return error
        self.metrics_fault = body.get("metrics")
        if self.metrics_fault == "hang":
            self._recovered.clear()
        else:
            self._recovered.set()
        return web.json_response({"metrics": self.metrics_fault})


async def _json_body(request: web.Request) -> tuple[dict, web.Response | None]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}, _error(400, "the request body is not valid JSON", None)
    if not isinstance(body, dict):
        return {}, _error(400, "the request body must be a JSON object", None)
    return body, None


def _error(status: int, message: str, param: str | None, code: str | None = None) -> web.Response:
    kind = "NotFoundError" if status == 404 else "BadRequestError" if status == 400 else "InternalServerError"
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code or status}},
                             status=status)


def _sse(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()
