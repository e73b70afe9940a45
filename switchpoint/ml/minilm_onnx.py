"""all-MiniLM-L6-v2 as an ONNX graph, written with `onnx.helper` straight from `model.safetensors` — no torch.

The graph is the whole sentence-transformers pipeline of that model: BERT embeddings (word + position +
token type 0) and LayerNorm, the encoder layers (multi-head self-attention, exact erf GELU), then mean pooling
over the attention mask and L2 normalisation, so a session returns finished sentence vectors:

    inputs   input_ids       int64 [batch, seq]   ([CLS] ... [SEP], padded with 0)
             attention_mask  int64 [batch, seq]   (1 for tokens, 0 for padding)
    output   embedding       float32 [batch, hidden]   (rows L2-normalised)

Token type ids are always 0 for a single sentence, so the type-0 embedding is folded into the position table.
`quantize_int8` derives the int8 variant with onnxruntime's dynamic quantisation, per channel (measured, see the
README's classifier benchmarks: per-tensor weights give cosine ≈ 0.97 to fp32, per-channel ≈ 0.99;
`reduce_range` hurts), first layer in fp32.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
           "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
           "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read as such (names the file and the cause)."""


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file with numpy: an 8-byte little-endian header length, a JSON header mapping each
    tensor name to dtype, shape and [begin, end) byte offsets into the data section that follows."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise SafetensorsError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise SafetensorsError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as exc:
        raise SafetensorsError(f"{path}: header is not JSON ({exc})") from exc
    data = memoryview(raw)[8 + n:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end > len(data) or end - begin != dtype.itemsize * math.prod(shape):
            raise SafetensorsError(f"{path}: tensor {name} has offsets {begin}..{end} that do not fit {shape}")
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    max_positions: int
    vocab_size: int

    @classmethod
    def load(cls, path: Path) -> BertConfig:
        c = json.loads(Path(path).read_text())
        if c.get("hidden_act", "gelu") != "gelu" or c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute positions and exact gelu are supported")
        return cls(hidden=c["hidden_size"], heads=c["num_attention_heads"], layers=c["num_hidden_layers"],
                   intermediate=c["intermediate_size"], eps=float(c["layer_norm_eps"]),
                   max_positions=c["max_position_embeddings"], vocab_size=c["vocab_size"])


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs: object) -> str:
        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs))
        return out

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, prefix: str) -> str:
        """torch Linear: x @ W^T + b (W is [out, in])."""
        y = self.op("MatMul", [x, self.const(f"{prefix}.weight_t", w.T.astype(np.float32))])
        return self.op("Add", [y, self.const(f"{prefix}.bias", b.astype(np.float32))])

    def layer_norm(self, x: str, w: np.ndarray, b: np.ndarray, prefix: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(f"{prefix}.weight", w), self.const(f"{prefix}.bias", b)],
                       axis=-1, epsilon=eps)


def build_graph(weights: dict[str, np.ndarray], config: BertConfig, normalize: bool = True) -> onnx.ModelProto:
    """The ONNX model of the sentence encoder. With normalize=False the output is the plain masked mean of the
    last hidden states (what the static-embedding distillation needs)."""
    w = weights
    h, nh = config.hidden, config.heads
    hd = h // nh
    g = _Graph()
    f32 = np.float32

    # Embeddings: word[ids] + (position + token_type[0])[:seq], LayerNorm.
    word = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"], axis=0)
    pos_table = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    pos = g.op("Slice", [g.const("position_type_embeddings", pos_table.astype(f32)),
                         g.const("zero_1d", np.array([0], np.int64)), seq_len,
                         g.const("axis0_1d", np.array([0], np.int64))])
    x = g.op("Add", [word, pos])
    x = g.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], "embeddings.LayerNorm",
                     config.eps)

    # Additive attention mask [batch, 1, 1, seq]: 0 for tokens, -10000 for padding (exp underflows to 0 in fp32).
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    ext = g.op("Unsqueeze", [mask_f, g.const("axes_1_2", np.array([1, 2], np.int64))])
    ext = g.op("Mul", [g.op("Sub", [g.const("one", np.array(1.0, f32)), ext]),
                       g.const("mask_value", np.array(-10000.0, f32))])

    split_heads = g.const("split_heads_shape", np.array([0, 0, nh, hd], np.int64))
    merge_heads = g.const("merge_heads_shape", np.array([0, 0, h], np.int64))
    scale = g.const("attention_scale", np.array(1.0 / math.sqrt(hd), f32))
    inv_sqrt2 = g.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), f32))
    half = g.const("half", np.array(0.5, f32))
    one = "one"

    for i in range(config.layers):
        p = f"encoder.layer.{i}"

        def lin(x_: str, name: str, p: str = p) -> str:
            return g.linear(x_, w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"], f"{p}.{name}")

        q = g.op("Transpose", [g.op("Reshape", [lin(x, "attention.self.query"), split_heads])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [lin(x, "attention.self.key"), split_heads])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [lin(x, "attention.self.value"), split_heads])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), ext])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge_heads])
        attn = lin(ctx, "attention.output.dense")
        x = g.layer_norm(g.op("Add", [attn, x]), w[f"{p}.attention.output.LayerNorm.weight"],
                         w[f"{p}.attention.output.LayerNorm.bias"], f"{p}.attention.output.LayerNorm", config.eps)
        inter = lin(x, "intermediate.dense")
        gelu = g.op("Mul", [g.op("Mul", [inter, half]),
                            g.op("Add", [g.op("Erf", [g.op("Mul", [inter, inv_sqrt2])]), one])])
        out = lin(gelu, "output.dense")
        x = g.layer_norm(g.op("Add", [out, x]), w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"],
                         f"{p}.output.LayerNorm", config.eps)

    # Mean pooling over the attention mask, then L2 normalisation (as sentence-transformers' Pooling + Normalize).
    m3 = g.op("Unsqueeze", [mask_f, g.const("axes_2", np.array([2], np.int64))])
    axis1 = g.const("axes_1", np.array([1], np.int64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, m3]), axis1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m3, axis1], keepdims=0), g.const("min_count", np.array(1e-9, f32))])
    if normalize:
        mean = g.op("Div", [summed, count])
        sq = g.op("ReduceSum", [g.op("Mul", [mean, mean]), g.const("axes_last", np.array([-1], np.int64))], keepdims=1)
        norm = g.op("Max", [g.op("Sqrt", [sq]), g.const("min_norm", np.array(1e-12, f32))])
        g.op("Div", [mean, norm], name="embedding")
    else:
        g.op("Div", [summed, count], name="embedding")

    graph = helper.make_graph(
        g.nodes, "all-MiniLM-L6-v2",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", h])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="switchpoint")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def load_source(source: Path) -> tuple[dict[str, np.ndarray], BertConfig]:
    """Weights and config from an extracted sentence-transformers model directory."""
    return read_safetensors(source / "model.safetensors"), BertConfig.load(source / "config.json")


def export(source: Path, out: Path) -> Path:
    """Write the fp32 sentence encoder graph of the model in `source` to the file `out`."""
    weights, config = load_source(source)
    model = build_graph(weights, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, out)
    return out


def quantize_int8(src: Path, dst: Path, fp32_layers: tuple[int, ...] = (0,)) -> Path:
    """Dynamic int8 quantisation of the weight MatMuls, one scale per output channel (activations are quantised
    at run time; the attention MatMuls between two activations stay fp32, and so does the embedding lookup).

    The MatMuls of `fp32_layers` stay fp32 too. Measured on the sentences of tests/data/minilm_reference.json,
    one text per call (cosine to sentence-transformers, min / mean): all layers int8 0.968 / 0.989; layer 0 kept
    fp32 0.979 / 0.994 (76 sentences within the window) for about 1/12 more time; layer 5 kept instead
    0.970 / 0.990. The first layer's outputs feed every later one, so its rounding errors cost the most.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(src, load_external_data=False)
    prefixes = tuple(f"encoder.layer.{i}." for i in fp32_layers)
    exclude = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1].startswith(prefixes)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a line per node, and advice, on the root logger
    try:
        quantize_dynamic(src, dst, per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)
    return dst
