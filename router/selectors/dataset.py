"""Routing datasets in the interchange format of data/routing/README.md (JSON Lines, one prompt per line).

Each line: {"id", "prompt", "task", "scores": {model: float in [0, 1]}, "costs": {model: USD},
"input_tokens": int, "output_tokens": {model: int}}. The file's models are those of its first row.

Bad rows: a row whose scores, costs or output_tokens do not name exactly the file's models is either an
error naming the line (on_missing="error", the default) or skipped and counted (on_missing="skip";
`skipped` and `skipped_lines` say which). Malformed JSON, a missing field, a score outside [0, 1] or a
negative cost is always an error with the line number; so is a file with no usable row.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from switchpoint.router.selectors.base import DatasetError

FIELDS = ("id", "prompt", "scores", "costs", "input_tokens", "output_tokens")
OnMissing = Literal["error", "skip"]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class RoutingDataset:
    path: Path
    digest: str  # SHA-256 of the file's bytes: the key of every cache built from it
    models: tuple[str, ...]
    ids: list[str]
    prompts: list[str]
    tasks: list[str]
    scores: np.ndarray  # (n, m) float64 in [0, 1]
    costs: np.ndarray  # (n, m) USD
    input_tokens: np.ndarray  # (n,) int
    output_tokens: np.ndarray  # (n, m) int
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def model_index(self, model: str) -> int | None:
        try:
            return self.models.index(model)
        except ValueError:
            return None

    def take(self, rows: np.ndarray | list[int]) -> RoutingDataset:
        """A subset (a split); it keeps the parent's path and digest, so caches stay keyed by the file."""
        idx = np.asarray(rows, dtype=np.int64)
        return RoutingDataset(
            self.path, self.digest, self.models, [self.ids[i] for i in idx], [self.prompts[i] for i in idx],
            [self.tasks[i] for i in idx], self.scores[idx], self.costs[idx], self.input_tokens[idx],
            self.output_tokens[idx], self.skipped, list(self.skipped_lines),
        )

    def prices(self) -> dict[str, tuple[float, float]]:
        """(input, output) USD per 1M tokens per model, recovered from the rows' costs by least squares.

        The format stores costs, not prices; the benchmark hands these prices to the selectors as the
        candidates' pricing. Rounded to 1e-6 USD/1M; `price_error` says how well they reproduce the costs.
        """
        out: dict[str, tuple[float, float]] = {}
        for j, m in enumerate(self.models):
            a = np.stack([self.input_tokens, self.output_tokens[:, j]], axis=1).astype(np.float64)
            sol, *_ = np.linalg.lstsq(a, self.costs[:, j] * 1e6, rcond=None)
            out[m] = (round(max(float(sol[0]), 0.0), 6), round(max(float(sol[1]), 0.0), 6))
        return out

    def price_error(self) -> float:
        """The largest |cost from prices - stored cost| over rows and models, in USD."""
        worst = 0.0
        for j, (pin, pout) in enumerate(self.prices().values()):
            est = (self.input_tokens * pin + self.output_tokens[:, j] * pout) / 1e6
            worst = max(worst, float(np.max(np.abs(est - self.costs[:, j]))) if len(self) else 0.0)
        return worst


def _row_error(path: Path, line: int, msg: str) -> DatasetError:
    return DatasetError(f"{path}:{line}: {msg}")


def load_dataset(path: str | Path, on_missing: OnMissing = "error") -> RoutingDataset:
    path = Path(path)
    if on_missing not in ("error", "skip"):
        raise DatasetError(f"on_missing must be 'error' or 'skip', not {on_missing!r}")
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    models: tuple[str, ...] | None = None
    ids: list[str] = []
    prompts: list[str] = []
    tasks: list[str] = []
    scores: list[list[float]] = []
    costs: list[list[float]] = []
    in_tok: list[int] = []
    out_tok: list[list[int]] = []
    skipped: list[int] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _row_error(path, line_no, f"not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise _row_error(path, line_no, "a row must be a JSON object")
            absent = [k for k in FIELDS if k not in row]
            if absent:
                raise _row_error(path, line_no, f"missing field(s) {', '.join(absent)}")
            for name in ("scores", "costs", "output_tokens"):
                if not isinstance(row[name], dict) or not row[name]:
                    raise _row_error(path, line_no, f"'{name}' must be a non-empty object of model -> number")
            if models is None:
                models = tuple(row["scores"])
            want = set(models)
            mismatch = [(name, want - set(row[name]), set(row[name]) - want)
                        for name in ("scores", "costs", "output_tokens") if set(row[name]) != want]
            if mismatch:
                if on_missing == "skip":
                    skipped.append(line_no)
                    continue
                name, lacking, extra = mismatch[0]
                what = (f"lacks model(s) {', '.join(sorted(lacking))}" if lacking
                        else f"has model(s) {', '.join(sorted(extra))} the file's first row does not")
                raise _row_error(path, line_no, f"'{name}' {what} (every row must carry the same models; "
                                                f"load with on_missing='skip' to skip such rows)")
            try:
                s = [float(row["scores"][m]) for m in models]
                c = [float(row["costs"][m]) for m in models]
                o = [int(row["output_tokens"][m]) for m in models]
                it = int(row["input_tokens"])
            except (TypeError, ValueError) as exc:
                raise _row_error(path, line_no, f"a score, cost or token count is not a number ({exc})") from None
            bad = [m for m, v in zip(models, s, strict=True) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
            if bad:
                raise _row_error(path, line_no, f"score of {', '.join(bad)} outside [0, 1]")
            if any(not math.isfinite(v) or v < 0 for v in c) or it < 0 or any(v < 0 for v in o):
                raise _row_error(path, line_no, "costs and token counts must be >= 0")
            ids.append(str(row["id"]))
            prompts.append(str(row["prompt"]))
            tasks.append(str(row.get("task", "")))
            scores.append(s)
            costs.append(c)
            in_tok.append(it)
            out_tok.append(o)
    if not ids:
        detail = f" ({len(skipped)} row(s) skipped for missing models)" if skipped else ""
        raise DatasetError(f"{path}: the dataset has no usable row{detail}")
    assert models is not None
    return RoutingDataset(
        path=path, digest=file_digest(path), models=models, ids=ids, prompts=prompts, tasks=tasks,
        scores=np.asarray(scores, dtype=np.float64), costs=np.asarray(costs, dtype=np.float64),
        input_tokens=np.asarray(in_tok, dtype=np.int64), output_tokens=np.asarray(out_tok, dtype=np.int64),
        skipped=len(skipped), skipped_lines=skipped,
    )
