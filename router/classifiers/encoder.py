"""Sentence encoders run by onnxruntime on one CPU thread, tokenised by the `tokenizers` library.

An encoder is a directory (built by `switchpoint models build`, see switchpoint/ml/build.py):

    encoder.json     manifest: name, kind ("transformer" | "static"), dim, max_tokens, truncation, source digest
    model.onnx       inputs input_ids, attention_mask (int64 [batch, seq]); output embedding (float32 [batch, dim])
    tokenizer.json   the WordPiece tokenizer of all-MiniLM-L6-v2 (its built-in truncation/padding are switched off)

Kinds: a *transformer* (all-MiniLM-L6-v2, fp32 or int8) sees [CLS] word pieces [SEP]; a *static* encoder (token
vectors distilled from the transformer, see switchpoint/ml/distill.py) sees the word pieces alone.

Truncation rule (`head+tail`), with W = max_tokens and C = the word pieces that fit (W - 2 for a transformer,
whose window includes [CLS] and [SEP]; W for a static encoder):
  1. a text longer than 16·W characters is first cut to its first 8·W and last 8·W characters, joined by a
     newline (this bounds tokenisation time; for ordinary text both halves still hold far more than C/2 pieces);
  2. the text is split into word pieces; if there are more than C, the first C - C//2 and the last C//2 are kept.
Keeping the tail as well as the head means two long prompts that differ only at their end (the usual way a
long conversation grows) do not embed identically — with a head-only window they would, and a semantic cache
keyed on them would serve one's answer to the other. sentence-transformers keeps only the head (W=256), so the
two agree exactly on texts within the window, and the reference tests compare the tail-keeping window
separately.

Empty text: a text with no word pieces at all (empty, only whitespace or control characters) embeds as the
all-zero vector — cosine 0 to everything, so it matches no example and no cache entry — and is never an error.
Text in any script is accepted: characters the vocabulary lacks become [UNK] word pieces (an emoji-only text
is a row of [UNK]s, not an empty one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from switchpoint.router.classifiers import models_dir

DEFAULT_ENCODER = "minilm-static"
ENCODER_NAMES = ("minilm-static", "minilm-l6-v2", "minilm-l6-v2-int8")
MANIFEST = "encoder.json"
KINDS = ("transformer", "static")
TRUNCATION = "head+tail"
CHARS_PER_TOKEN_CAP = 8  # step 1 of the truncation rule: keep 8·W characters from each end
# Texts per onnxruntime call. A static encoder batches (sorted by length, so padding stays small). A transformer
# runs one text per call: batching saves nothing per text on CPU (measured: 16 x 128 tokens), and the int8 model
# quantises activations with one scale per call, so batching would make a text's vector depend on its batch companions
# and their padding (measured: cosine to the reference 0.971 instead of 0.979 for "?" in a batch of 16).
BATCH = 64


class EncoderError(Exception):
    """An encoder that cannot be loaded or run; the message names the file and the cause."""


@dataclass(eq=False)
class Encoder:
    name: str
    kind: str
    dim: int
    max_tokens: int
    path: Path
    truncation: str = TRUNCATION
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    _session: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _specials: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def content_tokens(self) -> int:
        """How many word pieces of a text fit in the window (C of the truncation rule)."""
        return self.max_tokens - (2 if self._specials else 0)

    def token_ids(self, text: str) -> list[int]:
        """The word-piece ids of `text` that the model sees, after the truncation rule (no special tokens)."""
        limit = 2 * CHARS_PER_TOKEN_CAP * self.max_tokens
        if len(text) > limit:
            half = limit // 2
            text = text[:half] + "\n" + text[-half:]
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        c = self.content_tokens
        if len(ids) > c:
            ids = ids[:c - c // 2] + ids[len(ids) - c // 2:]
        return ids

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised; a text without word pieces gives a zero row."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; use encode_one for a single text")
        return self.encode_token_ids([self.token_ids(t) for t in texts])

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def encode_token_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed rows of word-piece ids as given (special tokens are added for a transformer). Rows longer than
        the window are refused: truncation is token_ids' job."""
        out = np.zeros((len(rows), self.dim), np.float32)
        live = [i for i, r in enumerate(rows) if len(r)]
        for i in live:
            if len(rows[i]) > self.content_tokens:
                raise ValueError(f"row {i} has {len(rows[i])} word pieces; the window holds {self.content_tokens}")
        live.sort(key=lambda i: len(rows[i]))
        extra = 2 if self._specials else 0
        batch = 1 if self._specials else BATCH
        for start in range(0, len(live), batch):
            chunk = live[start:start + batch]
            width = len(rows[chunk[-1]]) + extra
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            for j, i in enumerate(chunk):
                row = rows[i]
                if self._specials:
                    row = [self._specials[0], *row, self._specials[1]]
                ids[j, :len(row)] = row
                mask[j, :len(row)] = 1
            out[chunk] = self._run(ids, mask)
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        try:
            (emb,) = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EncoderError(f"{self.path / 'model.onnx'}: inference failed: {exc}") from exc
        if emb.shape != (ids.shape[0], self.dim):
            raise EncoderError(f"{self.path / 'model.onnx'}: output shape {emb.shape}, expected "
                               f"({ids.shape[0]}, {self.dim}) from {self.path / MANIFEST}")
        return emb


def encoder_dir(name_or_path: str | Path, models: Path | None = None) -> Path:
    """A bare name means a directory under the models dir; anything else (a Path, a string with a path
    separator or starting with '.' or '~') is a directory itself."""
    if isinstance(name_or_path, Path):
        return name_or_path
    if "/" in name_or_path or "\\" in name_or_path or name_or_path.startswith((".", "~")):
        return Path(name_or_path).expanduser()
    return (models if models is not None else models_dir()) / name_or_path


def load_encoder(name_or_path: str | Path, models: Path | None = None) -> Encoder:
    """Load an encoder by name (a directory under the models dir) or from a directory."""
    directory = encoder_dir(name_or_path, models)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise EncoderError(f"{directory}: no such encoder directory (build it with `switchpoint models build`)")
    if not manifest_path.is_file():
        raise EncoderError(f"{manifest_path}: missing manifest")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    name, kind, dim, max_tokens = _manifest_fields(manifest, manifest_path)
    truncation = manifest.get("truncation", TRUNCATION)
    if truncation != TRUNCATION:
        raise EncoderError(f"{manifest_path}: truncation {truncation!r} is not supported (only {TRUNCATION!r})")

    tokenizer = _load_tokenizer(directory / "tokenizer.json")
    specials = None
    if kind == "transformer":
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise EncoderError(f"{directory / 'tokenizer.json'}: no [CLS]/[SEP] tokens for a transformer encoder")
        specials = (cls_id, sep_id)
    session = _load_session(directory / "model.onnx")
    encoder = Encoder(name=name, kind=kind, dim=dim, max_tokens=max_tokens, path=directory, truncation=truncation,
                      manifest=manifest, _session=session, _tokenizer=tokenizer, _specials=specials)
    _check_output_dim(encoder, manifest_path)
    return encoder


def _manifest_fields(m: Any, path: Path) -> tuple[str, str, int, int]:
    if not isinstance(m, dict):
        raise EncoderError(f"{path}: the manifest is not a JSON object")
    name, kind, dim, max_tokens = m.get("name"), m.get("kind"), m.get("dim"), m.get("max_tokens")
    if not isinstance(name, str) or not name:
        raise EncoderError(f"{path}: 'name' must be a non-empty string")
    if kind not in KINDS:
        raise EncoderError(f"{path}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise EncoderError(f"{path}: 'dim' must be a positive integer, not {dim!r}")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 3:
        raise EncoderError(f"{path}: 'max_tokens' must be an integer >= 3, not {max_tokens!r}")
    return name, kind, dim, max_tokens


def _load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise EncoderError(f"{path}: missing tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise EncoderError(f"{path}: not a loadable tokenizer ({exc})") from exc
    # tokenizer.json of all-MiniLM-L6-v2 has truncation and padding to 128 built in; the window is ours.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def session_options() -> Any:
    """One thread per session: a router runs encoders on worker threads next to its event loop, and each
    request's inference must cost one core, not all of them."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def _load_session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise EncoderError(f"{path}: missing ONNX model")
    try:
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's InvalidProtobuf, Fail, ... share no public base class
        raise EncoderError(f"{path}: not a loadable ONNX model ({exc})") from exc
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if inputs != {"input_ids", "attention_mask"} or "embedding" not in outputs:
        raise EncoderError(f"{path}: expected inputs input_ids, attention_mask and output embedding; found inputs "
                           f"{sorted(inputs)}, outputs {sorted(outputs)}")
    return session


def _check_output_dim(encoder: Encoder, manifest_path: Path) -> None:
    """Run one word piece through the model: the declared output shape of a graph can be symbolic or wrong."""
    probe = encoder._tokenizer.token_to_id("a") or 1
    path = encoder.path / "model.onnx"
    try:
        ids = np.array([[probe] if encoder._specials is None else [*encoder._specials[:1], probe,
                                                                    encoder._specials[1]]], np.int64)
        (emb,) = encoder._session.run(["embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    except Exception as exc:
        raise EncoderError(f"{path}: inference failed on a one-token probe ({exc})") from exc
    if emb.ndim != 2 or emb.shape[1] != encoder.dim:
        raise EncoderError(f"{path}: the model gives vectors of shape {tuple(emb.shape[1:])}, but {manifest_path} "
                           f"says dim {encoder.dim}")
