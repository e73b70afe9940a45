"""The semantic cache: scoped entries in Redis 8 vector sets (shared) or in process (embedded default).

Route:  scope = cache_scope(...); conv = conversation(messages, encoder.max_tokens * 4)
        d = directive(metadata, sampling, options); if d.read: await cache.lookup(scope, conv, vec, threshold)
Report: ok, why = storable(outcome, response, pii, options, write_allowed=d.write)
        if ok: cache.store(scope, conv, vec, response, decision, options.ttl_s, options.max_entry_bytes, tokens)
"""

from __future__ import annotations

from switchpoint.router.cache.cache import CacheHit, Lookup, SemanticCache
from switchpoint.router.cache.guard import guards_match, salient
from switchpoint.router.cache.policy import (
    CACHE_HEADER,
    DEFAULT_THRESHOLD,
    CacheOptions,
    Directive,
    directive,
    storable,
)
from switchpoint.router.cache.scope import (
    CacheScope,
    Conversation,
    Sampling,
    cache_scope,
    conversation,
    exact_key,
    system_prompt,
)
from switchpoint.router.cache.store import CacheStore, MemoryStore

__all__ = [
    "CACHE_HEADER", "DEFAULT_THRESHOLD", "CacheHit", "CacheOptions", "CacheScope", "CacheStore", "Conversation",
    "Directive", "Lookup", "MemoryStore", "Sampling", "SemanticCache", "cache_scope", "conversation", "directive",
    "exact_key", "guards_match", "open_store", "salient", "storable", "system_prompt",
]


def open_store(redis_url: str | None, **options: object) -> CacheStore:
    """The Redis store for a URL, else the in-process store."""
    if redis_url:
        from switchpoint.router.cache.redis_store import RedisStore

        return RedisStore(redis_url, **options)  # type: ignore[arg-type]
    return MemoryStore(**options)  # type: ignore[arg-type]
