"""The cache scope, the text that is embedded and the exact-tier key: pure functions of the request.

A cached answer is only valid for a request that would have produced it. The scope is
everything besides the conversation that changes the answer, and an entry is visible only
to requests of the same scope:

- the RoutingPolicy (namespace/name) and the decision that routed the request;
- the tenant (never shared across tenants, even for identical prompts);
- the upstream model the decision sends to;
- the system prompt (system and developer messages, as a digest);
- the tools (a digest of tools_json, JSON keys sorted; tool order is kept: it reaches the model);
- the sampling parameters that change the answer: temperature, top_p, seed, stop (as a set),
  response_format and n. "Not given" is its own value (the upstream default applies), so
  temperature unset and temperature 1.0 are different scopes. max_tokens is not part of the
  scope (it would split the cache for nothing); instead an entry records its completion
  tokens and only answers requests whose max_tokens allows that many.

Temperature > 0: a stored answer is one sample of the model's distribution, so a hit replays
the same sample to every later asker of the scope. That is what most caches of chat traffic
want (the default temperature is 1.0 for most APIs, so refusing it would leave nothing to
cache). A decision that wants fresh samples sets CacheOptions.max_temperature (e.g. 0): then
requests above it neither read nor write the cache. n > 1 asks for several choices, which one
cached string cannot answer: never cached.

Multi-turn: the embedded text is the conversation, not only its last message. Turns other
than system/developer are written as "role: content" lines in order, and only the tail that
fits the encoder's window is kept (the last turn always; the oldest turns go first), because
a tokenizer truncates from the end and would otherwise drop the question itself. A
single-turn request embeds the bare user message. The exact tier's key is a digest of the
scope and the full normalised conversation (whitespace collapsed, case kept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from switchpoint.router.request import Sampling, Turn

DIGEST_CHARS = 24  # 96 bits: collisions are out of reach for any cache size
TAG_CHARS = 12  # policy and tenant tags in key names (flush by prefix); the scope digest is what isolates


def sampling_key(s: Sampling) -> str:
    """The sampling parameters in one canonical string (stop sequences as a set, JSON formats normalised)."""
    def num(x: float | None) -> str:
        return "-" if x is None else repr(round(float(x), 4))

    return "\x1f".join((
        num(s.temperature), num(s.top_p), "-" if s.seed is None else str(s.seed),
        "\x1e".join(sorted(set(s.stop))), _canonical_json(s.response_format), str(s.n or 1),
    ))


def as_sampling(sampling: Sampling | None) -> Sampling:
    """The request's Sampling, or the empty one when it sent none."""
    return Sampling() if sampling is None else sampling


@dataclass(frozen=True)
class CacheScope:
    policy: str  # namespace/name of the RoutingPolicy
    decision: str
    tenant: str
    model: str  # the upstream model
    digest: str  # of every part of the scope: the TAG entries are filed under

    @property
    def policy_tag(self) -> str:
        return policy_tag(self.policy)

    @property
    def tenant_tag(self) -> str:
        return tenant_tag(self.tenant)


def _hex(*parts: str, chars: int = DIGEST_CHARS) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:chars]


def policy_tag(policy: str) -> str:
    return _hex("policy", policy, chars=TAG_CHARS)


def tenant_tag(tenant: str) -> str:
    return _hex("tenant", tenant, chars=TAG_CHARS)


def _canonical_json(text: str) -> str:
    """JSON text with keys sorted and no whitespace (so formatting does not split the cache); other text as is."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(stripped), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            pass
    return stripped


def system_prompt(messages: Sequence[Turn]) -> str:
    return "\n".join(m.content for m in messages if m.role in ("system", "developer"))


def cache_scope(policy: str, decision: str, tenant: str, model: str, system: str = "", tools_json: str = "",
                sampling: Sampling | None = None, encoder: str = "") -> CacheScope:
    """sampling: the request's Sampling, or None (none sent).
    encoder: the name of the encoder that embeds the requests; vectors of two encoders never share a scope
    (a changed encoder starts an empty vector tier instead of comparing incomparable vectors)."""
    s = as_sampling(sampling)
    digest = _hex("scope/v1", policy, decision, tenant, model, _hex(system.strip()),
                  _hex(_canonical_json(tools_json)), sampling_key(s), encoder)
    return CacheScope(policy, decision, tenant, model, digest)


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Conversation:
    exact_text: str  # the whole conversation (system prompt excluded: it is in the scope), normalised
    embed_text: str  # what the encoder sees

    @property
    def turns(self) -> int:
        return self.exact_text.count("\x1e") + 1 if self.exact_text else 0


def conversation(messages: Sequence[Turn], max_embed_chars: int = 1000) -> Conversation:
    """The texts of a request for the cache.

    max_embed_chars: the encoder's window in characters (about 4 per token for English text:
    pass encoder.max_tokens * 4)."""
    turns = [(m.role, normalise(m.content)) for m in messages if m.role not in ("system", "developer")]
    exact = "\x1e".join(f"{role}\x1f{content}" for role, content in turns)
    if len(turns) == 1:
        return Conversation(exact, turns[0][1])
    lines: list[str] = []
    used = 0
    for role, content in reversed(turns):
        line = f"{role}: {content}"
        if lines and used + len(line) + 1 > max_embed_chars:
            break
        if not lines and len(line) > max_embed_chars:
            line = f"{role}: " + content[-(max_embed_chars - len(role) - 2):]  # the end of a long last turn
        lines.append(line)
        used += len(line) + 1
    return Conversation(exact, "\n".join(reversed(lines)))


def exact_key(scope: CacheScope, conv: Conversation) -> str:
    """The exact tier's key: identical scope and identical (normalised) conversation."""
    return _hex("exact/v1", scope.digest, conv.exact_text, chars=32)

