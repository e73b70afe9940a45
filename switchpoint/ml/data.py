"""Labelled text for classifier heads: JSONL reading with line-numbered errors, digests, and the fixed split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Labelled data that cannot be used; ``problems`` lists (line number, cause) for each bad row."""

    def __init__(self, path: str, problems: list[tuple[int, str]]):
        self.path = path
        self.problems = problems
        shown = "; ".join(f"line {n}: {cause}" for n, cause in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{path}: {len(problems)} bad row(s): {shown}{more}")


@dataclass(frozen=True)
class Rows:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    skipped: tuple[tuple[int, str], ...] = ()  # (line, cause) of rows left out with skip_bad=True

    def __len__(self) -> int:
        return len(self.texts)


def read_jsonl(path: str | Path, skip_bad: bool = False) -> Rows:
    """Rows {"text": str, "label": str} (other fields are ignored); blank lines are allowed.

    A row that is not a JSON object, lacks a field, or has a non-string or empty text/label is an error naming its
    line; with ``skip_bad`` such rows are left out and listed in ``Rows.skipped`` instead.
    """
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(str(p), [(0, f"cannot read: {exc}")]) from exc
    texts, labels, problems = [], [], []
    # Split on "\n" only: str.splitlines() would also split on U+2028, U+0085 ... inside JSON strings.
    for n, line in enumerate(raw.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((n, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            problems.append((n, "not a JSON object"))
            continue
        cause = None
        for field in ("text", "label"):
            value = row.get(field)
            if field not in row:
                cause = f"missing field '{field}'"
            elif not isinstance(value, str):
                cause = f"'{field}' is {type(value).__name__}, not a string"
            elif not value.strip():
                cause = f"'{field}' is empty"
            if cause:
                break
        if cause:
            problems.append((n, cause))
            continue
        texts.append(row["text"])
        labels.append(row["label"].strip())
    if problems and not skip_bad:
        raise DataError(str(p), problems)
    if not texts:
        raise DataError(str(p), [*problems, (0, "no usable rows")])
    return Rows(tuple(texts), tuple(labels), tuple(problems))


def rows_digest(texts: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 of the rows in canonical form: one `{"label":...,"text":...}` JSON line each (sorted keys, UTF-8)."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(json.dumps({"label": label, "text": text}, ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def text_unit(text: str, seed: int, salt: str = "") -> float:
    """A number in [0, 1) fixed by the text (and seed): sha256(f"{seed}:{salt}{text}") as a fraction."""
    digest = hashlib.sha256(f"{seed}:{salt}{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


SPLIT_RULE = "held out iff sha256(f'{seed}:{text}')[:8] / 2**64 < holdout (identical texts share a side)"


def split_heldout(texts: Iterable[str], holdout: float, seed: int = 0) -> list[bool]:
    """True for held-out rows. Decided by a hash of the text, so the split does not depend on row order and a
    duplicated prompt can never be on both sides."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, not {holdout}")
    return [text_unit(t, seed) < holdout for t in texts]


def fixed_subset(texts: Sequence[str], max_rows: int, seed: int = 0) -> list[int]:
    """Indices of a fixed subset of at most ``max_rows`` rows: those with the smallest text hash (salted apart from
    the split's), returned in their original order."""
    if max_rows >= len(texts):
        return list(range(len(texts)))
    ranked = sorted(range(len(texts)), key=lambda i: text_unit(texts[i], seed, "subset:"))
    return sorted(ranked[:max_rows])
