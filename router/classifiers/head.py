"""Classifier heads at run time: a head.json manifest and a head.onnx graph, run by onnxruntime on one thread.

A head is named by a source string:
- ``builtin:<name>``: ``<models>/heads/<name>`` (built by ``switchpoint models build``);
- a directory path, or ``file://`` URL of a directory, holding head.json and head.onnx;
- an ``https://`` (or ``http://``) URL of a head directory: ``<url>/head.json`` and ``<url>/head.onnx`` are
  downloaded once (10 s timeout each) into ``<models>/downloads/<sha256(url)[:16]>/`` and loaded from there.

Everything is checked at load time, so a broken head fails the config that names it, never a request: both files
present, the manifest's fields and types, the ONNX graph loads, its input is [batch, dim] float32 with the dim the
manifest states, its output has one column per label, the encoder is known (a directory under the models folder or
a built-in name) and, when that encoder is installed, its dimension equals the head's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from switchpoint.router.classifiers import models_dir
from switchpoint.router.classifiers.encoder import session_options

KNOWN_ENCODERS = ("minilm-static", "minilm-l6-v2", "minilm-l6-v2-int8")
DOWNLOAD_TIMEOUT_S = 10.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class HeadError(Exception):
    """A head that cannot be used; the message names the file (or URL) and the cause."""


@dataclass
class Head:
    name: str
    encoder: str
    labels: tuple[str, ...]
    kind: str  # "multiclass" | "binary" (labels = (negative, positive))
    thresholds: dict[str, float]
    manifest: dict[str, Any]
    path: Path | None = None
    dim: int = 0
    _session: Any = field(default=None, repr=False)  # onnxruntime sessions are safe to run from several threads

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, len(labels)) probabilities for (n, dim) embeddings; a (dim,) vector is taken as one row."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise HeadError(f"head '{self.name}': embeddings of shape {tuple(x.shape)}, expected (n, {self.dim})")
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self._session.run(None, {self._input: x})[0]

    @property
    def _input(self) -> str:
        return self._session.get_inputs()[0].name


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise HeadError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _require(manifest: dict, key: str, types: type | tuple[type, ...], where: Path) -> Any:
    if key not in manifest:
        raise HeadError(f"{where}: manifest has no '{key}'")
    value = manifest[key]
    if not isinstance(value, types):
        raise HeadError(f"{where}: manifest field '{key}' has the wrong type ({type(value).__name__})")
    return value


def _encoder_dim(encoder: str, models: Path) -> int | None:
    """The dimension an installed encoder states in its encoder.json (None when not installed here)."""
    path = models / encoder / "encoder.json"
    try:
        return int(json.loads(path.read_text())["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_head_dir(directory: Path, models: Path | None = None, source: str | None = None) -> Head:
    """Load and validate a head directory (head.json + head.onnx)."""
    models = models or models_dir()
    manifest_path, onnx_path = directory / "head.json", directory / "head.onnx"
    if not directory.is_dir():
        raise HeadError(f"{directory}: no such head directory" + (f" (from {source})" if source else ""))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HeadError(f"{manifest_path}: missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadError(f"{manifest_path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise HeadError(f"{manifest_path}: the manifest is not a JSON object")
    name = _require(manifest, "name", str, manifest_path)
    kind = _require(manifest, "kind", str, manifest_path)
    labels = _require(manifest, "labels", list, manifest_path)
    encoder = _require(manifest, "encoder", str, manifest_path)
    thresholds = manifest.get("thresholds", {})
    if kind not in ("multiclass", "binary"):
        raise HeadError(f"{manifest_path}: kind must be multiclass or binary, not {kind!r}")
    if not labels or not all(isinstance(lab, str) and lab for lab in labels) or len(set(labels)) != len(labels):
        raise HeadError(f"{manifest_path}: labels must be distinct non-empty strings")
    if kind == "binary" and len(labels) != 2:
        raise HeadError(f"{manifest_path}: a binary head has two labels (negative, positive), not {len(labels)}")
    if not isinstance(thresholds, dict) or not all(
        lab in labels and isinstance(v, int | float) and 0.0 <= v <= 1.0 for lab, v in thresholds.items()
    ):
        raise HeadError(f"{manifest_path}: thresholds must map the head's labels to numbers in [0, 1]")
    if encoder not in KNOWN_ENCODERS and not (models / encoder / "encoder.json").is_file():
        known = ", ".join(KNOWN_ENCODERS)
        raise HeadError(f"{manifest_path}: encoder '{encoder}' is unknown (not one of {known}, "
                        f"nor installed under {models})")
    if not onnx_path.is_file():
        raise HeadError(f"{onnx_path}: missing")
    session = _session(onnx_path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise HeadError(f"{onnx_path}: expected one input (embedding) and an output (probabilities)")
    in_shape, out_shape = inputs[0].shape, outputs[0].shape
    if inputs[0].type != "tensor(float)" or len(in_shape) != 2 or not isinstance(in_shape[1], int):
        raise HeadError(f"{onnx_path}: input must be float32 [batch, dim], not {inputs[0].type} {in_shape}")
    dim = in_shape[1]
    stated_dim = manifest.get("dim", dim)
    if stated_dim != dim:
        raise HeadError(f"{onnx_path}: takes {dim}-dimensional embeddings but the manifest says {stated_dim}")
    if len(out_shape) != 2 or out_shape[1] != len(labels):
        raise HeadError(f"{onnx_path}: outputs {out_shape[1] if len(out_shape) == 2 else out_shape} values per row "
                        f"but the manifest lists {len(labels)} labels")
    enc_dim = _encoder_dim(encoder, models)
    if enc_dim is not None and enc_dim != dim:
        raise HeadError(f"{onnx_path}: takes {dim}-dimensional embeddings but encoder '{encoder}' produces {enc_dim}")
    head = Head(name=name, encoder=encoder, labels=tuple(labels), kind=kind,
                thresholds={lab: float(v) for lab, v in thresholds.items()}, manifest=manifest,
                path=directory, dim=dim, _session=session)
    try:  # a graph that loads but cannot run (wrong ops, shapes) fails here, not on a request
        probs = head.predict(np.zeros((1, dim), np.float32))
    except Exception as exc:
        raise HeadError(f"{onnx_path}: does not run on a [1, {dim}] input ({str(exc)[:200]})") from exc
    if probs.shape != (1, len(labels)):
        raise HeadError(f"{onnx_path}: returned shape {probs.shape} for one row, expected (1, {len(labels)})")
    return head


def _download(url: str, models: Path) -> Path:
    """Fetch <url>/head.json and <url>/head.onnx into the download cache once; the cached copy is reused."""
    target = models / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (target / "head.json").is_file() and (target / "head.onnx").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    base = url.rstrip("/")
    for fname in ("head.json", "head.onnx"):
        try:
            with urllib.request.urlopen(f"{base}/{fname}", timeout=DOWNLOAD_TIMEOUT_S) as resp:
                data = resp.read(MAX_DOWNLOAD_BYTES + 1)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise HeadError(f"{base}/{fname}: download failed ({exc})") from exc
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise HeadError(f"{base}/{fname}: larger than {MAX_DOWNLOAD_BYTES} bytes")
        (staging / fname).write_bytes(data)
    if target.exists():  # an incomplete earlier copy
        shutil.rmtree(target)
    staging.replace(target)
    return target


def resolve(source: str, models: Path | None = None) -> Path:
    """The local directory a head source names (downloading an http(s) head first)."""
    models = models or models_dir()
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if not name or "/" in name or name.startswith("."):
            raise HeadError(f"{source}: not a built-in head name")
        return models / "heads" / name
    if source.startswith(("https://", "http://")):
        return _download(source, models)
    if source.startswith("file://"):
        return Path(urllib.request.url2pathname(source.removeprefix("file://")))
    return Path(source).expanduser()


def load_head(path_or_url: str | Path, models: Path | None = None) -> Head:
    """Load a head from ``builtin:<name>``, a directory, a ``file://`` URL or an ``https://`` URL (see module doc)."""
    models = models or models_dir()
    source = str(path_or_url)
    directory = resolve(source, models)
    if source.startswith("builtin:") and not directory.is_dir():
        raise HeadError(f"{directory}: built-in head '{source.removeprefix('builtin:')}' is not installed "
                        f"(run `switchpoint models build`)")
    return load_head_dir(directory, models, source)
