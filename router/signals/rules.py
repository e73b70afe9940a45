"""Cheap rule signals: computed for every request, each a pure function of the request."""

from __future__ import annotations

from dataclasses import dataclass

from switchpoint.router.request import RouteInput

from switchpoint.config.model import (
    KeywordSignal,
    MetadataSignal,
    RegexSignal,
    Signal,
    TenantSignal,
    TextScope,
    TokenCount,
    TokenRangeSignal,
    ToolsSignal,
)


@dataclass(frozen=True)
class SignalResult:
    name: str
    kind: str
    fired: bool
    evidence: str  # what the signal saw, for traces and `switchpoint route`


def evaluate_signals(signals: tuple[Signal, ...], req: RouteInput) -> tuple[SignalResult, ...]:
    return tuple(evaluate_signal(s, req) for s in signals)


def evaluate_signal(signal: Signal, req: RouteInput) -> SignalResult:
    match signal:
        case KeywordSignal():
            return _keywords(signal, req)
        case RegexSignal():
            return _regex(signal, req)
        case TokenRangeSignal():
            count = req.prompt_tokens if signal.counted is TokenCount.PROMPT else req.context_tokens
            fired = (signal.min is None or count >= signal.min) and (signal.max is None or count <= signal.max)
            return SignalResult(signal.name, signal.counted.value, fired, f"{count} tokens")
        case MetadataSignal():
            value = req.metadata.get(signal.key)
            fired = value is not None and (signal.values is None or value in signal.values)
            seen = f"{signal.key}={value}" if value is not None else f"{signal.key} absent"
            return SignalResult(signal.name, "metadata", fired, seen)
        case TenantSignal():
            return SignalResult(signal.name, "tenant", req.tenant in signal.tenants, f"tenant={req.tenant or '-'}")
        case ToolsSignal():
            fired = req.tools_present == signal.present
            return SignalResult(signal.name, "tools", fired, "tools present" if req.tools_present else "no tools")
    raise TypeError(f"unknown signal type {type(signal).__name__}")


def _text(req: RouteInput, scope: TextScope) -> str:
    if scope is TextScope.LAST_USER:
        return req.last_user_text
    if scope is TextScope.USER:
        return req.user_text
    return req.all_text


def _keywords(signal: KeywordSignal, req: RouteInput) -> SignalResult:
    text = _text(req, signal.scope)
    if not signal.match_all:
        hit = signal.pattern.search(text)
        return SignalResult(signal.name, "keywords", hit is not None, f"matched '{hit.group()}'" if hit else "no match")
    found: set[str] = set()
    for hit in signal.pattern.finditer(text):
        found.add(hit.group() if signal.case_sensitive else hit.group().lower())
        if len(found) == len(signal.terms):
            break
    evidence = f"matched {len(found & signal.terms)}/{len(signal.terms)} terms"
    return SignalResult(signal.name, "keywords", found >= signal.terms, evidence)


def _regex(signal: RegexSignal, req: RouteInput) -> SignalResult:
    text = _text(req, signal.scope)
    matched = 0
    for pattern in signal.patterns:
        if pattern.search(text):
            matched += 1
            if not signal.match_all:
                break
        elif signal.match_all:
            break
    fired = matched == len(signal.patterns) if signal.match_all else matched > 0
    return SignalResult(signal.name, "regex", fired, f"{matched} pattern(s) matched")
