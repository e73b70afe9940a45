"""The cache stage of the pipeline: look up after the decision, store at Report.

Where it sits: after the decision and the pool choice (the scope names the upstream model the
request would go to), before budgets (a hit costs nothing, so it reserves nothing). A hit is
answered at once: the Decision carries the cached response, no replica is charged, and no Report
is expected (one that comes anyway is answered NOT_FOUND, as for any unknown request id). A miss
keeps what the write needs (scope, conversation, embedding) in the in-flight entry, and the
Report's response is stored if `storable` allows it (success, complete, no personal data unless
the policy says so, not bypassed).

The embedding is the request's conversation (earlier turns included) under the decision's cache
encoder; a single-turn request shares it with the classifier signals (computed once). If the
embedding cannot be computed in time, only the exact tier is consulted.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from switchpoint.config.model import CacheConfig
from switchpoint.router.cache import (
    CacheHit,
    CacheOptions,
    CacheScope,
    Conversation,
    SemanticCache,
    cache_scope,
    conversation,
    directive,
    storable,
    system_prompt,
)
from switchpoint.router.classifiers.pii import find_pii
from switchpoint.router.frozen import frozen
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.pipeline import RouteResult
from switchpoint.router.signals.neural import SignalInference

log = logging.getLogger("switchpoint.router.cache")

EMBED_TIMEOUT_MS = 200
CHARS_PER_TOKEN = 4  # the encoder window in characters, for the conversation text it embeds


@frozen
class CacheWrite:
    """What a miss keeps until its Report, to store the response."""

    scope: CacheScope
    conversation: Conversation
    embedding: np.ndarray | None
    options: CacheOptions
    decision: str


@frozen
class CacheStep:
    outcome: str  # hit | miss | bypass | off | unavailable
    hit: CacheHit | None = None
    write: CacheWrite | None = None
    reason: str = ""  # why the cache was bypassed (for the trace)


def cache_options(config: CacheConfig) -> CacheOptions:
    return CacheOptions(threshold=config.similarity_threshold, ttl_s=float(config.ttl_seconds),
                        max_entry_bytes=config.max_entry_bytes, store_truncated=config.store_truncated,
                        store_pii=config.store_pii, target_precision=config.target_precision)


class CacheStage:
    def __init__(self, cache: SemanticCache, inference: SignalInference | None, metrics: RouterMetrics):
        self.cache = cache
        self.inference = inference
        self.metrics = metrics

    async def lookup(self, result: RouteResult) -> CacheStep:
        decision = result.outcome.decision
        if result.policy is None or not decision.cache.enabled:
            return CacheStep("off")
        req = result.request
        options = cache_options(decision.cache)
        wanted = directive(req.metadata, req.sampling, options)
        if not wanted.read and not wanted.write:
            return self._counted(decision.name, CacheStep("bypass", reason=wanted.reason))
        scope = cache_scope(result.policy.key, decision.name, req.tenant, result.selection.candidate.model,
                            system_prompt(req.messages), req.tools_json, req.sampling, encoder=decision.cache.encoder)
        conv = conversation(req.messages, self._window_chars(result, decision.cache.encoder))
        embedding = await self._embedding(result, decision.cache.encoder, conv.embed_text)
        write = CacheWrite(scope, conv, embedding, options, decision.name) if wanted.write else None
        if not wanted.read:
            return self._counted(decision.name, CacheStep("bypass", write=write, reason=wanted.reason))
        found = await self.cache.lookup(scope, conv, embedding, options.threshold, req.max_tokens,
                                        options.target_precision)
        if found.outcome == "hit":
            return self._counted(decision.name, CacheStep("hit", hit=found.hit))
        return self._counted(decision.name, CacheStep(found.outcome, write=write))

    async def store(self, write: CacheWrite, outcome: str, response: str, completion_tokens: int) -> str:
        """Store a Reported response if it may be; returns why (stored, error, truncated, pii, empty, ...).

        The PII scan of the conversation and the answer is the costly part (~2.7 MB/s): it runs only for an
        exchange that is otherwise storable, in a worker thread, so a long prompt does not hold up the event
        loop for the whole scan (the regular-expression engine holds the GIL, but yields it every 5 ms).
        """
        ok, why = storable(outcome, response, False, write.options)
        if ok and not write.options.store_pii and await asyncio.to_thread(_has_pii, write.conversation.exact_text,
                                                                          response):
            ok, why = False, "pii"
        if ok and not self.cache.store(write.scope, write.conversation, write.embedding, response, write.decision,
                                       write.options.ttl_s, write.options.max_entry_bytes, completion_tokens):
            why = "dropped"
        self.metrics.cache_writes.labels(why).inc()
        return why

    def _counted(self, decision: str, step: CacheStep) -> CacheStep:
        self.metrics.cache_lookups.labels(decision, step.outcome).inc()
        return step

    def _window_chars(self, result: RouteResult, encoder: str) -> int:
        if self.inference is None:
            return 1000
        return result.inference.models.encoder(encoder).max_tokens * CHARS_PER_TOKEN

    async def _embedding(self, result: RouteResult, encoder: str, text: str) -> np.ndarray | None:
        if self.inference is None:
            return None
        try:
            return await self.inference.embedding(result.inference, encoder, text, EMBED_TIMEOUT_MS)
        except Exception as exc:  # the exact tier still answers; the trace and the log say why
            log.warning("cache embedding with %s failed (%s: %s); exact tier only", encoder, type(exc).__name__, exc)
            return None


def _has_pii(*texts: str) -> bool:
    return any(find_pii(text) for text in texts)
