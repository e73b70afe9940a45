"""The default classifier heads that ship with Switchpoint: domain, difficulty and jailbreak.

Data (all in the checkout, see data/routing/README.md and data/classifiers/README.md):
- domain: every row of data/routing/routellm_mmlu.jsonl, labelled with the MMLU-Pro category of its MMLU subject
  (task "mmlu/<subject>", mapped by data/classifiers/mmlu_pro_categories.json). An MLP head (switchpoint.ml.mlp:
  +3 points of held-out accuracy over the linear one on both encoders), no class weighting (balanced weights cost
  the linear head 1 point of accuracy and 1.5 of macro-F1 on minilm-static).
  data/routing/dcrouter_train.jsonl is not used: its task is "mixed" for every row, so it has no subject label.
- difficulty: the same rows, labelled needs_strong when the weak model of that file
  (mistralai/Mixtral-8x7B-Instruct-v0.1) answered wrongly (score 0), weak_ok otherwise. That is "the cheap model
  is not enough", the question a router asks; it does not ask whether GPT-4 got it right (both models fail on
  14% of rows, where a strong model does not help either). Base rate: 31.9% needs_strong. No class weighting,
  so the head's probability estimates P(the weak model fails) itself and `difficulty > 0.7` means what it says.
- jailbreak: data/classifiers/jailbreak.jsonl (jailbreak / prompt-injection prompts against benign ones).

`build_default_heads` writes models/heads/<name>/ trained on the default encoder; `head_report` retrains a head
on any encoder (optionally on a fixed subset of the rows) and returns its held-out metrics, for the bench's
reference comparison with the transformer encoder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchpoint.ml.data import fixed_subset, rows_digest
from switchpoint.ml.train import TrainedHead, TrainOptions, encode_all, train_on_embeddings

DEFAULT_HEADS = ("domain", "difficulty", "jailbreak")
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
SUBSET_RULE = "the max_rows rows with the smallest sha256(f'0:subset:{text}'), in file order"


def data_root() -> Path:
    """<checkout>/data (the labelled data is not part of an installed wheel)."""
    return Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class HeadData:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    options: TrainOptions
    sources: tuple[str, ...] = ()  # where each row comes from (jailbreak data), for per-source results


def _routing_rows(data: Path) -> list[dict]:
    path = data / "routing" / "routellm_mmlu.jsonl"
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def head_data(name: str, data: Path | None = None) -> HeadData:
    """Texts, labels and training options of a default head."""
    data = data or data_root()
    if name == "domain":
        mapping = json.loads((data / "classifiers" / "mmlu_pro_categories.json").read_text())
        rows = _routing_rows(data)
        labels = tuple(mapping["subjects"][r["task"].removeprefix("mmlu/")] for r in rows)
        opts = TrainOptions(
            name="domain", kind="multiclass", labels=tuple(mapping["categories"]), weighting="none", model="mlp",
            description="data/routing/routellm_mmlu.jsonl prompts; label = MMLU-Pro category of the MMLU subject "
                        "(data/classifiers/mmlu_pro_categories.json)",
            extra={"label_source": mapping["source"]})
        return HeadData(tuple(r["prompt"] for r in rows), labels, opts)
    if name == "difficulty":
        rows = _routing_rows(data)
        labels = tuple("needs_strong" if r["scores"][WEAK_MODEL] == 0 else "weak_ok" for r in rows)
        opts = TrainOptions(
            name="difficulty", kind="binary", labels=("weak_ok", "needs_strong"), positive="needs_strong",
            weighting="none", threshold=0.5,
            description="data/routing/routellm_mmlu.jsonl prompts",
            extra={"label_definition": f"needs_strong iff scores['{WEAK_MODEL}'] == 0 (the weak model's answer "
                                       f"was wrong), else weak_ok"})
        return HeadData(tuple(r["prompt"] for r in rows), labels, opts)
    if name == "jailbreak":
        path = data / "classifiers" / "jailbreak.jsonl"
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        opts = TrainOptions(
            name="jailbreak", kind="binary", labels=("benign", "jailbreak"), positive="jailbreak",
            weighting="balanced", threshold="f1",
            description="data/classifiers/jailbreak.jsonl (sources and licences in data/classifiers/README.md)")
        return HeadData(tuple(r["text"] for r in rows), tuple(r["label"] for r in rows), opts,
                        tuple(r["source"].split(" ")[0] for r in rows))
    raise ValueError(f"no default head named {name!r} (known: {', '.join(DEFAULT_HEADS)})")


def _load_encoder(models: Path, encoder_name: str):  # -> Encoder (imported lazily: onnxruntime is heavy)
    from switchpoint.router.classifiers.encoder import load_encoder

    return load_encoder(encoder_name, models)


_EMBEDDINGS: dict[tuple[str, str, str], np.ndarray] = {}  # (models, encoder, rows digest) -> embeddings


def _embeddings(models: Path, encoder_name: str, texts: tuple[str, ...]) -> np.ndarray:
    """Embeddings of ``texts``, kept for the process: domain and difficulty share their prompts, so a report or
    build of both encodes them once (the transformer takes ~25 ms per prompt)."""
    key = (str(models), encoder_name, rows_digest(texts, [""] * len(texts)))
    found = _EMBEDDINGS.get(key)
    if found is None:
        found = _EMBEDDINGS[key] = encode_all(_load_encoder(models, encoder_name), texts)
    return found


def train_default(models: Path, name: str, encoder_name: str, max_rows: int | None = None,
                  data: Path | None = None, out: Path | None = None) -> TrainedHead:
    hd = head_data(name, data)
    texts, labels, sources = hd.texts, hd.labels, hd.sources
    if max_rows is not None and max_rows < len(texts):
        keep = fixed_subset(texts, max_rows)
        texts, labels = tuple(texts[i] for i in keep), tuple(labels[i] for i in keep)
        sources = tuple(sources[i] for i in keep) if sources else ()
        hd.options.extra["subset"] = {"max_rows": max_rows, "rule": SUBSET_RULE}
    x = _embeddings(models, encoder_name, texts)
    trained = train_on_embeddings(x, texts, labels, hd.options, encoder_name)
    if sources and trained.heldout_index is not None and trained.kind_binary:
        trained.manifest["metrics"]["heldout_by_source"] = _by_source(trained, labels, sources)
    if out is not None:
        trained.write(out)
    return trained


def _by_source(trained: TrainedHead, labels: tuple[str, ...], sources: tuple[str, ...]) -> dict:
    """Per data source: held-out rows, their label, and the share the head flags as positive."""
    positive = trained.labels[1]
    threshold = trained.manifest["thresholds"][positive]
    groups: dict[tuple[str, str], list[int]] = {}
    for j, i in enumerate(trained.heldout_index):
        groups.setdefault((sources[i], labels[i]), []).append(j)
    out = {}
    for (source, label), js in sorted(groups.items()):
        flagged = sum(float(trained.heldout_probs[j, 1]) >= threshold for j in js)
        out[f"{source} [{label}]"] = {"rows": len(js), f"flagged_{positive}": round(flagged / len(js), 4)}
    return out


def build_default_heads(models: Path, encoder_name: str = "minilm-static", data: Path | None = None,
                        names: tuple[str, ...] = DEFAULT_HEADS, log=print) -> dict[str, dict]:
    """Train each default head on ``encoder_name`` and write it to <models>/heads/<name>/; returns the held-out
    metrics by head."""
    results = {}
    for name in names:
        start = time.perf_counter()
        trained = train_default(models, name, encoder_name, data=data, out=models / "heads" / name)
        m = trained.manifest["metrics"]["heldout"]
        results[name] = m
        extra = f", precision {m['precision']:.3f}, recall {m['recall']:.3f}" if "precision" in m else ""
        log(f"head {name}: {encoder_name}, {trained.manifest['training']['train_rows']} training rows, held-out "
            f"accuracy {m['accuracy']:.3f} (majority {m['majority_accuracy']:.3f}), macro-F1 {m['macro_f1']:.3f}"
            f"{extra} [{time.perf_counter() - start:.1f} s] -> {models / 'heads' / name}")
    return results


def head_report(models: Path, head_name: str, encoder_name: str, max_rows: int | None = None,
                data: Path | None = None) -> dict:
    """Retrain a default head on ``encoder_name`` (on a fixed subset of at most ``max_rows`` rows if given) and
    return its held-out metrics. Compare encoders at the same ``max_rows``: fewer rows alone lower accuracy."""
    start = time.perf_counter()
    trained = train_default(models, head_name, encoder_name, max_rows=max_rows, data=data)
    m = trained.manifest["metrics"]["heldout"]
    out = {
        "head": head_name,
        "encoder": encoder_name,
        "rows": trained.manifest["training"]["rows"],
        "train_rows": trained.manifest["training"]["train_rows"],
        "heldout_rows": trained.manifest["training"]["heldout_rows"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "majority_accuracy": m["majority_accuracy"],
        "subset": trained.manifest["training"].get("subset", {}).get("rule", "").replace("max_rows", str(max_rows))
        or None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    for key in ("precision", "recall", "roc_auc"):
        if key in m:
            out[key] = m[key]
    if trained.manifest["kind"] == "binary":
        out["threshold"] = trained.manifest["thresholds"][trained.labels[1]]
    return out


# Rows of the fixed subsets the bench's reference runs use: the transformer encodes ~25-40 ms per prompt on one
# core, so 3000 shared domain/difficulty prompts + 1000 jailbreak prompts take about two minutes.
REFERENCE_ROWS = {"domain": 3000, "difficulty": 3000, "jailbreak": 1000}


def bench_heads(models: Path, encoder_name: str = "minilm-static", reference_encoder: str = "minilm-l6-v2",
                max_rows: dict[str, int] | None = None, data: Path | None = None) -> dict[str, dict]:
    """Per default head: held-out accuracy and macro-F1 on ``encoder_name`` with all rows (from the built head's
    manifest when it was trained on that encoder and the same data, else trained here), and the like-for-like
    comparison on a fixed subset: the same recipe on ``encoder_name`` and on ``reference_encoder``."""
    max_rows = {**REFERENCE_ROWS, **(max_rows or {})}
    out = {}
    for name in DEFAULT_HEADS:
        full = _built_metrics(models, name, encoder_name, data)
        if full is None:
            full = head_report(models, name, encoder_name, data=data)
        sub = head_report(models, name, encoder_name, max_rows=max_rows[name], data=data)
        ref = head_report(models, name, reference_encoder, max_rows=max_rows[name], data=data)
        out[name] = {
            "accuracy": full["accuracy"], "macro_f1": full["macro_f1"],
            "reference_accuracy": ref["accuracy"], "reference_macro_f1": ref["macro_f1"],
            "subset_rows": sub["rows"], "subset_accuracy": sub["accuracy"], "subset_macro_f1": sub["macro_f1"],
            "gap_points": round(100 * (ref["accuracy"] - sub["accuracy"]), 2),
            "reference_seconds": ref["seconds"],
        }
    return out


def _built_metrics(models: Path, name: str, encoder_name: str, data: Path | None) -> dict | None:
    try:
        manifest = json.loads((models / "heads" / name / "head.json").read_text())
    except (OSError, ValueError):
        return None
    hd = head_data(name, data)
    if manifest.get("encoder") != encoder_name or manifest.get("training", {}).get("data_sha256") != rows_digest(
            hd.texts, hd.labels):
        return None
    return manifest["metrics"]["heldout"]
