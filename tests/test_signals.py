"""Rule signals: table-driven behaviour, a property check of whole-word matching, token estimates."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.config.model import (
    KeywordSignal,
    MetadataSignal,
    RegexSignal,
    TenantSignal,
    TextScope,
    TokenCount,
    TokenRangeSignal,
    ToolsSignal,
)
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.signals.rules import SignalBoard, contains_term, signal_evidence, signal_fired
from switchpoint.router.signals.tokens import SAMPLE_CHARS, estimate_tokens

from .conftest import ROOT


def request(*turns: tuple[str, str], **fields) -> RouteInput:
    return RouteInput(request_id="r", model="auto", messages=tuple(ChatTurn(r, c) for r, c in turns), **fields)


def kw(*terms: str, match_all: bool = False, case: bool = False, scope: TextScope = TextScope.LAST_USER):
    return KeywordSignal("k", tuple(t if case else t.lower() for t in terms), match_all, case, scope)


USER = ("user", "Please refactor my Python class")
SIGNAL_CASES = [
    ("keyword whole word", kw("python"), request(USER), True),
    ("keyword not inside a word", kw("class"), request(("user", "classification task")), False),
    ("keyword case-insensitive", kw("PYTHON"), request(USER), True),
    ("keyword case-sensitive miss", kw("python", case=True), request(USER), False),
    ("keyword punctuation term matches anywhere", kw("```"), request(("user", "x```y")), True),
    ("keyword multi-word", kw("stack trace"), request(("user", "here is the Stack Trace:")), True),
    ("keyword all: every term", kw("python", "class", match_all=True), request(USER), True),
    ("keyword all: one missing", kw("python", "rust", match_all=True), request(USER), False),
    ("keyword scope lastUser ignores system", kw("secret"), request(("system", "secret"), ("user", "hi")), False),
    ("keyword scope all sees system", kw("secret", scope=TextScope.ALL),
     request(("system", "secret"), ("user", "hi")), True),
    ("keyword scope user sees earlier turns", kw("first", scope=TextScope.USER),
     request(("user", "first"), ("assistant", "ok"), ("user", "second")), True),
    ("regex any", RegexSignal("r", (re.compile(r"\d{3}-\d{2}-\d{4}"),), False, TextScope.LAST_USER),
     request(("user", "my id is 123-45-6789")), True),
    ("regex all needs every pattern",
     RegexSignal("r", (re.compile("a"), re.compile("z")), True, TextScope.LAST_USER), request(("user", "abc")), False),
    ("prompt tokens above min", TokenRangeSignal("t", TokenCount.PROMPT, 3, None), request(USER), True),
    ("prompt tokens above max", TokenRangeSignal("t", TokenCount.PROMPT, None, 2), request(USER), False),
    ("context tokens include max_tokens", TokenRangeSignal("t", TokenCount.CONTEXT, 1000, None),
     request(USER, max_tokens=1000), True),
    ("metadata present", MetadataSignal("m", "x-tier", None), request(USER, metadata={"x-tier": "gold"}), True),
    ("metadata value listed", MetadataSignal("m", "x-tier", frozenset({"gold"})),
     request(USER, metadata={"x-tier": "silver"}), False),
    ("metadata absent", MetadataSignal("m", "x-tier", None), request(USER), False),
    ("tenant in list", TenantSignal("t", frozenset({"acme"})), request(USER, tenant="acme"), True),
    ("tenant not in list", TenantSignal("t", frozenset({"acme"})), request(USER, tenant="globex"), False),
    ("tools present", ToolsSignal("t", True), request(USER, tools_present=True), True),
    ("tools absent wanted", ToolsSignal("t", False), request(USER, tools_present=True), False),
]


@pytest.mark.parametrize(("what", "signal", "req", "fired"), SIGNAL_CASES, ids=[c[0] for c in SIGNAL_CASES])
def test_signal_fires_as_documented(what, signal, req, fired):
    assert signal_fired(signal, req) is fired
    assert signal_evidence(signal, req)  # always says what it saw


def reference_contains(text: str, term: str) -> bool:
    head = r"(?<!\w)" if re.match(r"\w", term) else ""
    tail = r"(?!\w)" if re.search(r"\w$", term) else ""
    return re.search(head + re.escape(term) + tail, text) is not None


@given(st.text(alphabet="ab _-.\n1é", max_size=40), st.text(alphabet="ab _-.1é", min_size=1, max_size=4))
def test_substring_matching_agrees_with_the_regex_definition(text, term):
    assert contains_term(text, term) == reference_contains(text, term)


def test_signals_are_computed_only_when_asked():
    board = SignalBoard((kw("python"), TenantSignal("t", frozenset({"acme"}))), request(USER))
    assert board.results() == ()
    assert board.fired("k") and board.fired("k")
    assert [r.name for r in board.results()] == ["k"]
    assert board.fired_names == ("k",)
    board.evaluate_rules()
    assert [(r.name, r.fired) for r in board.results()] == [("k", True), ("t", False)]


def _dataset_rows() -> list[dict]:
    rows = []
    for name in ("routellm_mmlu.jsonl", "dcrouter_train.jsonl"):
        with (ROOT / "data" / "routing" / name).open() as fh:
            rows.extend(json.loads(line) for _, line in zip(range(3000), fh, strict=False))
    return rows


def test_token_estimate_tracks_cl100k_on_the_shipped_data():
    errors = [abs(estimate_tokens(r["prompt"]) - r["input_tokens"]) / r["input_tokens"]
              for r in _dataset_rows() if r["input_tokens"] >= 10]
    assert statistics.mean(errors) < 0.08
    assert sorted(errors)[int(0.9 * len(errors))] < 0.2


def test_long_texts_are_estimated_from_a_sample_at_bounded_cost():
    text = "The party of the first part shall indemnify the other party. " * 2000
    exact = len(text.split()) + text.count(".")
    assert len(text) > SAMPLE_CHARS
    assert abs(estimate_tokens(text) - exact) / exact < 0.05
    assert estimate_tokens("") == 0


def test_data_licence_attribution_ships_with_the_data():
    readme = (ROOT / "data" / "routing" / "README.md").read_text()
    assert "Apache License" in readme and "MIT License" in readme
    assert Path(ROOT / "data" / "routing" / "routellm_mmlu.jsonl").exists()
