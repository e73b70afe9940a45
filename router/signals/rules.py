"""Cheap rule signals: each a pure function of the request, registered by kind (`rule_kind`).

The hot path asks only whether a signal fired (`signal_fired`); what the signal
saw (`signal_evidence`) is worked out only for recorded traces and for
`switchpoint route`, since formatting it costs as much as the test itself.
Adding a rule kind touches its dataclass (config/model.py), its compile step
(config/compiler.py), its CRD field, and its registration here; a test ties the
CRD's signal fields to `signal_kinds()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchpoint.config.model import (
    ClassifierSignal,
    KeywordSignal,
    MetadataSignal,
    PiiSignal,
    RegexSignal,
    Signal,
    SimilaritySignal,
    TenantSignal,
    TextScope,
    TokenCount,
    TokenRangeSignal,
    ToolsSignal,
)
from switchpoint.router.classifiers.pii import find_pii
from switchpoint.router.frozen import frozen
from switchpoint.router.request import RouteInput

NeuralSignal = ClassifierSignal | SimilaritySignal | PiiSignal  # computed off the event loop (signals/neural.py)


@frozen
class SignalResult:
    name: str
    kind: str
    fired: bool
    evidence: str  # what the signal saw, for traces and `switchpoint route`


@frozen
class Inferred:
    """The outcome of a classifier or similarity signal (see signals/neural.py)."""

    fired: bool
    evidence: str
    degraded: bool = False


class NeedsInference(Exception):
    """Raised by the signal board for a neural signal it has no outcome for yet."""

    def __init__(self, signal: NeuralSignal):
        super().__init__(signal.name)
        self.signal = signal


class SignalBoard:
    """The signals of one request, each computed on first use and remembered.

    Decisions are checked in priority order, so a signal that no rule on the way to
    the winning decision needs is never computed: a long prompt pays for the
    keyword and regex scans only when the outcome depends on them, and a classifier
    runs only when a decision being checked tests it. Classifier and similarity
    signals are computed elsewhere (off the event loop): asking for one that has no
    outcome yet raises NeedsInference, and the caller records it with `record`.
    """

    def __init__(self, signals: tuple[Signal, ...], req: RouteInput):
        self._signals = {s.name: s for s in signals}
        self._req = req
        self._fired: dict[str, bool] = {}
        self._inferred: dict[str, Inferred] = {}

    def fired(self, name: str) -> bool:
        fired = self._fired.get(name)
        if fired is None:
            signal = self._signals[name]
            if isinstance(signal, NEURAL):
                raise NeedsInference(signal)
            fired = self._fired[name] = signal_fired(signal, self._req)
        return fired

    def record(self, name: str, outcome: Inferred) -> None:
        self._inferred[name] = outcome
        self._fired[name] = outcome.fired

    def pending(self) -> list[NeuralSignal]:
        """The neural signals not computed yet (for `switchpoint route`, which shows every signal)."""
        return [s for n, s in self._signals.items() if isinstance(s, NEURAL) and n not in self._fired]

    def evaluate_rules(self) -> None:
        for name, signal in self._signals.items():
            if not isinstance(signal, NEURAL):
                self.fired(name)

    @property
    def degraded(self) -> tuple[str, ...]:
        return tuple(n for n, o in self._inferred.items() if o.degraded)

    @property
    def fired_names(self) -> tuple[str, ...]:
        return tuple(n for n in self._signals if self._fired.get(n))

    def results(self) -> tuple[SignalResult, ...]:
        """The signals computed so far, in policy order, with their evidence."""
        return tuple(
            SignalResult(n, signal_kind(s), self._fired[n],
                         self._inferred[n].evidence if n in self._inferred else signal_evidence(s, self._req))
            for n, s in self._signals.items() if n in self._fired
        )


@dataclass(frozen=True)
class RuleKind:
    """A rule signal kind: a pure test of the request, and what it saw (for traces and `switchpoint route`)."""

    name: str  # its field in the CRD's spec.signals[]
    fired: Callable[[Any, RouteInput], bool]
    evidence: Callable[[Any, RouteInput], str]


RULE_KINDS: dict[type, RuleKind] = {}
NEURAL_KINDS: dict[type, str] = {ClassifierSignal: "classifier", SimilaritySignal: "similarity", PiiSignal: "pii"}
NEURAL = tuple(NEURAL_KINDS)  # computed off the event loop (signals/neural.py)


def rule_kind(signal_type: type, name: str, evidence: Callable[[Any, RouteInput], str]) -> Callable:
    """Register the decorated test as the rule kind of `signal_type` (one registration per kind)."""
    def register(fired: Callable[[Any, RouteInput], bool]) -> Callable[[Any, RouteInput], bool]:
        if signal_type in RULE_KINDS:
            raise ValueError(f"signal kind {name!r} is registered twice")
        RULE_KINDS[signal_type] = RuleKind(name, fired, evidence)
        return fired
    return register


def signal_kinds() -> tuple[str, ...]:
    """Every signal kind's CRD field name (token counts have two: promptTokens, contextTokens)."""
    names = [k.name for t, k in RULE_KINDS.items() if t is not TokenRangeSignal]
    return (*names, *(c.value for c in TokenCount), *NEURAL_KINDS.values())


def signal_kind(signal: Signal) -> str:
    if isinstance(signal, TokenRangeSignal):
        return signal.counted.value
    found = RULE_KINDS.get(type(signal))
    return found.name if found is not None else NEURAL_KINDS[type(signal)]


def signal_fired(signal: Signal, req: RouteInput) -> bool:
    return RULE_KINDS[type(signal)].fired(signal, req)  # one dict lookup instead of a chain of isinstance checks


def signal_evidence(signal: Signal, req: RouteInput) -> str:
    return RULE_KINDS[type(signal)].evidence(signal, req)


def _keywords_evidence(signal: KeywordSignal, req: RouteInput) -> str:
    found = _keywords_found(signal, req)
    return f"matched {', '.join(repr(t) for t in found[:5])}" if found else "no match"


@rule_kind(KeywordSignal, "keywords", _keywords_evidence)
def _keywords_fired(signal: KeywordSignal, req: RouteInput) -> bool:
    found = _keywords_found(signal, req)
    return len(found) == len(signal.terms) if signal.match_all else bool(found)


@rule_kind(RegexSignal, "regex", lambda s, req: f"{_regex_matched(s, req)} of {len(s.patterns)} pattern(s) matched")
def _regex_fired(signal: RegexSignal, req: RouteInput) -> bool:
    matched = _regex_matched(signal, req)
    return matched == len(signal.patterns) if signal.match_all else matched > 0


@rule_kind(TokenRangeSignal, "tokens", lambda s, req: f"{_token_count(s, req)} tokens")
def _tokens_fired(signal: TokenRangeSignal, req: RouteInput) -> bool:
    count = _token_count(signal, req)
    return (signal.min is None or count >= signal.min) and (signal.max is None or count <= signal.max)


def _metadata_evidence(signal: MetadataSignal, req: RouteInput) -> str:
    value = req.metadata.get(signal.key)
    return f"{signal.key}={value}" if value is not None else f"{signal.key} absent"


@rule_kind(MetadataSignal, "metadata", _metadata_evidence)
def _metadata_fired(signal: MetadataSignal, req: RouteInput) -> bool:
    value = req.metadata.get(signal.key)
    return value is not None and (signal.values is None or value in signal.values)


@rule_kind(TenantSignal, "tenant", lambda s, req: f"tenant={req.tenant or '-'}")
def _tenant_fired(signal: TenantSignal, req: RouteInput) -> bool:
    return req.tenant in signal.tenants


@rule_kind(ToolsSignal, "tools", lambda s, req: "tools present" if req.tools_present else "no tools")
def _tools_fired(signal: ToolsSignal, req: RouteInput) -> bool:
    return req.tools_present == signal.present


def pii_found(signal: PiiSignal, text: str) -> list[str]:
    """The personal-data types of the signal found in the text (computed off the loop: see signals/neural.py)."""
    found = sorted({e.type for e in find_pii(text)})
    return found if signal.types is None else [t for t in found if t in signal.types]


def scoped_text(req: RouteInput, scope: TextScope) -> str:
    if scope is TextScope.LAST_USER:
        return req.last_user_text
    if scope is TextScope.USER:
        return req.user_text
    return req.all_text


def _token_count(signal: TokenRangeSignal, req: RouteInput) -> int:
    return req.prompt_tokens if signal.counted is TokenCount.PROMPT else req.context_tokens


def scan_text(req: RouteInput, scope: TextScope, max_chars: int, lower: bool = False) -> str:
    """The text a keyword or regex signal reads: bounded by the policy's textScan.maxChars, so the work of
    the rule signals does not grow with the prompt (a 1 MB prompt is scanned as its first and last 2 K
    characters by default)."""
    return req.scan_view(lambda: scoped_text(req, scope), (scope,), max_chars, lower)


def _keywords_found(signal: KeywordSignal, req: RouteInput) -> list[str]:
    """The terms found (all of them for match 'all'; the first for 'any')."""
    text = scan_text(req, signal.scope, signal.scan_chars, lower=not signal.case_sensitive)
    present = [t for t in signal.terms if t in text]  # C-level prefilter: most terms are absent
    if signal.match_all and len(present) < len(signal.terms):
        return []
    found = []
    for term in present:
        if contains_term(text, term):
            found.append(term)
            if not signal.match_all:
                break
        elif signal.match_all:
            return []
    return found


def contains_term(text: str, term: str) -> bool:
    """Substring search (C speed) with whole-word checks where the term starts or ends with a word character.

    One str.find per occurrence beats a regex alternation with look-arounds by two
    orders of magnitude on long prompts.
    """
    check_head = _is_word(term[0])
    check_tail = _is_word(term[-1])
    start = text.find(term)
    while start >= 0:
        end = start + len(term)
        head_ok = not check_head or start == 0 or not _is_word(text[start - 1])
        tail_ok = not check_tail or end == len(text) or not _is_word(text[end])
        if head_ok and tail_ok:
            return True
        start = text.find(term, start + 1)
    return False


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _regex_matched(signal: RegexSignal, req: RouteInput) -> int:
    """How many patterns matched, stopping as soon as the answer is known."""
    text = scan_text(req, signal.scope, signal.scan_chars)
    matched = 0
    for pattern in signal.patterns:
        if pattern.search(text):
            matched += 1
            if not signal.match_all:
                break
        elif signal.match_all:
            break
    return matched
