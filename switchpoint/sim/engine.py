"""A model server's engine, as a step-based model of continuous batching (vLLM-like).

It is the honest stand-in for a GPU: nothing here runs a model, but the timing follows the
structure that makes scheduling matter. The engine runs *iterations*; each iteration
decodes one token for every running sequence and prefills up to `max_batched_tokens`
prompt tokens (chunked prefill), and lasts

    iteration_ms = iteration_base_ms + decode_ms_per_seq * decoding + prefill_ms_per_token * prefilled

so a long prefill stretches the inter-token latency of everything decoding beside it (the
prefill/decode interference that disaggregation removes), and decode time grows with the
running batch. At most `max_num_seqs` run; the rest wait. KV-cache blocks (`kv_blocks` of
`block_tokens`) are allocated as tokens are computed — a prefill chunk's blocks when the
chunk is scheduled, a decode's when it crosses a block boundary — as vLLM V1 does, so
`kv_cache_usage_perc` shows computed work, not work queued behind it. A request that
cannot get its blocks waits for the next iteration. Prompt blocks already in the prefix
cache (chained block hashes, LRU over free blocks) are not prefilled again. A decode-role
replica receiving a disaggregated request skips prefill and pays a KV-transfer delay instead.

Defaults model one H100 serving an 8B model, after llm-d-inference-sim's reference values
(../shared/ANCHORS.md): a 256-token prompt alone gives TTFT = 10 + 256 x 0.2 = 61 ms
(reference 60-120 ms), one sequence decodes at 10.1 ms per token and 64 at 15.1 ms
(reference ITL 10-15 ms), prefill 0.2 ms per token (reference 0.15-0.30). KV capacity:
~50 GB of KV at 128 KiB per token (Llama-3-8B: 32 layers x 8 KV heads x 128 x 2 x fp16)
is ~400k tokens = 25,000 blocks of 16; max_num_seqs 256 and a 2,048-token chunk as vLLM.

The engine is pure Python with an explicit clock: `start_iteration(now)` plans an iteration
and returns its duration, `finish_iteration(now)` applies it. The HTTP simulator drives it
in real time; `switchpoint bench scheduling` drives it in virtual time.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    kv_blocks: int = 25_000
    block_tokens: int = 16
    iteration_base_ms: float = 10.0
    decode_ms_per_seq: float = 0.08
    prefill_ms_per_token: float = 0.2
    kv_transfer_base_ms: float = 5.0
    kv_transfer_ms_per_token: float = 0.002


def prompt_blocks(text: str, block_tokens: int = 16) -> tuple[int, ...]:
    """Chained hashes of the prompt's full blocks (a token is taken as CHARS_PER_TOKEN characters)."""
    size = block_tokens * CHARS_PER_TOKEN
    out = []
    prev = 0
    for start in range(0, len(text) - size + 1, size):
        prev = hash((prev, text[start:start + size]))
        out.append(prev)
    return tuple(out)


def token_count(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass
class EngineRequest:
    id: str
    prompt_tokens: int
    output_tokens: int
    blocks: tuple[int, ...] = ()
    kv_transferred: bool = False  # decode side of a disaggregated request: prefill happened elsewhere
    prefill_only: bool = False  # prefill side of a disaggregated request: stops after prefill
    arrival: float = 0.0
    # progress
    cached_tokens: int = 0
    prefilled: int = 0
    generated: int = 0
    ready_at: float = 0.0  # a transferred KV cache arrives at this time
    first_token_at: float | None = None
    finished_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    blocks_held: int = 0

    @property
    def in_prefill(self) -> bool:
        return self.prefilled < self.prompt_tokens

    @property
    def done(self) -> bool:
        return self.finished_at is not None


class PrefixCache:
    """Block hashes of computed prompts, evicted least-recently-used when blocks are needed."""

    def __init__(self) -> None:
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, blocks: tuple[int, ...]) -> int:
        """How many leading blocks are cached (and mark them recently used)."""
        n = 0
        for b in blocks:
            if b not in self._lru:
                break
            self._lru.move_to_end(b)
            n += 1
        return n

    def add(self, blocks: tuple[int, ...]) -> None:
        for b in blocks:
            self._lru[b] = None
            self._lru.move_to_end(b)

    def evict(self, count: int) -> None:
        for _ in range(min(count, len(self._lru))):
            self._lru.popitem(last=False)


class Engine:
    def __init__(self, config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.cache = PrefixCache()
        self.used_blocks = 0  # held by running requests
        self._plan: list[tuple[EngineRequest, int]] | None = None  # (request, prefill tokens this iteration)
        self.prefix_queries = 0
        self.prefix_hits = 0

    # -- observable state (what /metrics exposes) ----------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def kv_usage(self) -> float:
        return self.used_blocks / self.config.kv_blocks

    @property
    def busy(self) -> bool:
        return self._plan is not None

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def submit(self, req: EngineRequest, now: float) -> None:
        req.arrival = now
        self.waiting.append(req)

    # -- one iteration ------------------------------------------------------------------------
    def start_iteration(self, now: float) -> float | None:
        """Plan the next iteration; its duration in ms, or None when nothing can run now."""
        assert self._plan is None, "an iteration is already running"
        self._admit(now)
        cfg = self.config
        budget = cfg.max_batched_tokens
        plan: list[tuple[EngineRequest, int]] = []
        decoding = 0
        for req in self.running:
            if req.ready_at > now or req.in_prefill:
                continue  # KV cache still in transfer, or not yet prefilled
            if not self._allocate(req, req.prefilled + req.generated + 1):
                continue
            plan.append((req, 0))
            decoding += 1
            budget -= 1
        for req in self.running:
            if req.in_prefill and req.ready_at <= now and budget > 0:
                chunk = min(budget, req.prompt_tokens - req.prefilled)
                if not self._allocate(req, req.prefilled + chunk):
                    continue
                plan.append((req, chunk))
                budget -= chunk
        if not plan:
            return None
        self._plan = plan
        prefill = sum(chunk for _, chunk in plan)
        return cfg.iteration_base_ms + cfg.decode_ms_per_seq * decoding + cfg.prefill_ms_per_token * prefill

    def finish_iteration(self, now: float) -> list[EngineRequest]:
        """Apply the planned iteration at `now`; returns the requests that emitted a token."""
        assert self._plan is not None
        emitted = []
        for req, chunk in self._plan:
            if chunk:
                req.prefilled += chunk
                if req.in_prefill:
                    continue
                self.cache.add(req.blocks)  # the prompt's KV is now computed and reusable
                if req.prefill_only:
                    self._finish(req, now)
                    emitted.append(req)
                    continue
            req.generated += 1
            req.token_times.append(now)
            if req.first_token_at is None:
                req.first_token_at = now
            emitted.append(req)
            if req.generated >= req.output_tokens:
                self._finish(req, now)
        self._plan = None
        return emitted

    def next_ready_at(self, now: float) -> float | None:
        """When a request waiting for its KV transfer becomes runnable (to wake an idle engine)."""
        pending = [r.ready_at for r in self.running if r.ready_at > now]
        return min(pending) if pending else None

    def abort(self, request_id: str, now: float) -> bool:
        for queue in (self.waiting, self.running):
            for req in list(queue):
                if req.id == request_id:
                    if queue is self.running:
                        self._release(req)
                    queue.remove(req)
                    req.finished_at = now
                    return True
        return False

    def _allocate(self, req: EngineRequest, tokens: int) -> bool:
        """Hold blocks for `tokens` computed tokens of the request; False when the cache is full."""
        need = math.ceil(tokens / self.config.block_tokens) - req.blocks_held
        if need <= 0:
            return True
        free = self.config.kv_blocks - self.used_blocks
        if need > free:
            return False
        self.cache.evict(max(0, len(self.cache) - (free - need)))  # cached blocks live in free space
        self.used_blocks += need
        req.blocks_held += need
        return True

    def _admit(self, now: float) -> None:
        cfg = self.config
        while self.waiting and len(self.running) < cfg.max_num_seqs:
            req = self.waiting.popleft()
            self.prefix_queries += 1
            if req.kv_transferred:
                if not self._allocate(req, req.prompt_tokens):
                    self.waiting.appendleft(req)
                    break
                req.prefilled = req.prompt_tokens
                req.ready_at = now + cfg.kv_transfer_base_ms + cfg.kv_transfer_ms_per_token * req.prompt_tokens
                self.cache.add(req.blocks)
            else:
                hit = self.cache.match(req.blocks)
                if hit:
                    self.prefix_hits += 1
                # vLLM always recomputes at least the last token, so a full hit leaves one token to prefill
                req.cached_tokens = min(hit * cfg.block_tokens, req.prompt_tokens - 1)
                req.prefilled = req.cached_tokens
                self._allocate(req, req.cached_tokens)  # cached blocks are shared, still referenced
            self.running.append(req)

    def _finish(self, req: EngineRequest, now: float) -> None:
        req.finished_at = now
        self.running.remove(req)
        self._release(req)

    def _release(self, req: EngineRequest) -> None:
        self.used_blocks -= req.blocks_held
        req.blocks_held = 0
