"""Token estimates without a model's tokenizer.

A router serves many models with different tokenizers and must not spend a
tokenizer's cost on every request. The estimate counts GPT-style pre-tokenizer
pieces (words with their leading space, runs of up to three digits, punctuation
runs, whitespace runs), about 0.06 us per character. On the routing data shipped
with the project its mean absolute error against tiktoken's cl100k_base is about
6% (tests/test_tokens.py asserts the bound). Texts longer than SAMPLE_CHARS are
estimated from the piece density of their first SAMPLE_CHARS characters, so the
estimate never costs more than about a quarter of a millisecond, whatever the prompt.
"""

from __future__ import annotations

import re

PIECES = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+")
SAMPLE_CHARS = 4 * 1024


def estimate_tokens(text: str) -> int:
    if len(text) <= SAMPLE_CHARS:
        return len(PIECES.findall(text))
    sampled = len(PIECES.findall(text, 0, SAMPLE_CHARS))
    return round(sampled * len(text) / SAMPLE_CHARS)
