"""Synthetic workloads for `switchpoint bench scheduling`, reproducible from a seed.

- chat: multi-turn conversations under 16 long shared system prompts (~2,000 tokens each);
  each turn carries the conversation so far (warm prefixes) and asks for 100-250 tokens.
- mixed: half long-prompt/short-answer (4,000-8,000 prompt tokens, 20-60 output tokens:
  summarisation, RAG) and half short-prompt/long-answer (100-300 prompt, 300-800 output:
  writing, code), nothing shared: the prefill/decode mix where request counts mislead.
- bursty: mid-sized requests (500-2,000 prompt, 100-300 output) arriving in bursts: one
  second at 4x the rate, then three seconds of silence, repeating (same mean rate).
Arrivals are Poisson within those patterns. Text is real English: consecutive questions
from the RouteLLM MMLU data shipped in data/routing/ (about 4.05 characters per cl100k
token there), cut to length, so the router's token estimate and the simulator's count
(4 characters per token) disagree about as much as they would on real traffic (~5%).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from switchpoint.router.request import ChatTurn

CORPUS = Path(__file__).resolve().parents[2] / "data" / "routing" / "routellm_mmlu.jsonl"


@functools.cache
def _texts() -> tuple[str, ...]:
    if not CORPUS.exists():
        raise FileNotFoundError(f"{CORPUS} is missing: the benchmark workloads draw their text from it")
    with CORPUS.open(encoding="utf-8") as fh:
        return tuple(json.loads(line)["prompt"] for line in fh)


@dataclass(frozen=True)
class WorkloadRequest:
    at: float
    messages: tuple[ChatTurn, ...]
    output_tokens: int


def words(rng: random.Random, tokens: int) -> str:
    """About `tokens` tokens of real text: consecutive corpus prompts from a random start, cut to length."""
    texts = _texts()
    want = max(1, tokens) * 4
    i = rng.randrange(len(texts))
    parts, size = [], 0
    while size < want:
        parts.append(texts[i % len(texts)])
        size += len(parts[-1]) + 2
        i += 1
    return "\n\n".join(parts)[:want]


def _poisson(rng: random.Random, rate: float, duration: float) -> list[float]:
    times, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return times
        times.append(t)


def chat(rate: float, duration: float, rng: random.Random) -> list[WorkloadRequest]:
    systems = [words(random.Random(1000 + g), 2000) for g in range(16)]
    conversations: dict[int, list[ChatTurn]] = {}
    out = []
    for at in _poisson(rng, rate, duration):
        user = rng.randrange(16 * 5)
        history = conversations.setdefault(user, [ChatTurn("system", systems[user % 16])])
        history.append(ChatTurn("user", words(rng, rng.randint(50, 150))))
        output = rng.randint(100, 250)
        out.append(WorkloadRequest(at, tuple(history), output))
        history.append(ChatTurn("assistant", words(rng, output)))
        if len(history) > 9:  # a conversation ends after four turns; the user starts another
            del conversations[user]
    return out


def mixed(rate: float, duration: float, rng: random.Random) -> list[WorkloadRequest]:
    out = []
    for at in _poisson(rng, rate, duration):
        if rng.random() < 0.5:
            prompt, output = rng.randint(4000, 8000), rng.randint(20, 60)
        else:
            prompt, output = rng.randint(100, 300), rng.randint(300, 800)
        out.append(WorkloadRequest(at, (ChatTurn("user", words(rng, prompt)),), output))
    return out


def bursty(rate: float, duration: float, rng: random.Random) -> list[WorkloadRequest]:
    out = []
    for at in _poisson(rng, 4 * rate, duration):
        if at % 4.0 >= 1.0:
            continue  # silent for three seconds of every four
        prompt, output = rng.randint(500, 2000), rng.randint(100, 300)
        out.append(WorkloadRequest(at, (ChatTurn("user", words(rng, prompt)),), output))
    return out


WORKLOADS: dict[str, Callable[[float, float, random.Random], list[WorkloadRequest]]] = {
    "chat": chat, "mixed": mixed, "bursty": bursty,
}
