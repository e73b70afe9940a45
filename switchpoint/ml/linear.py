"""Linear classifier heads on sentence embeddings, trained with numpy only, and their ONNX export.

Model: multinomial logistic regression (softmax over k labels) or, for yes/no heads, logistic regression (one
sigmoid whose output p is the probability of the positive label; the head reports [1 - p, p]). Inputs are
standardised with the training mean and standard deviation; the standardisation is folded into the exported
weights, so the ONNX graph is just MatMul + Add + Softmax/Sigmoid.

Objective: the class-weighted mean cross-entropy plus l2/2 * ||W||^2 (the bias is not penalised), minimised by
full-batch L-BFGS (memory 10, Armijo backtracking) from zero weights, so training is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "embedding"
OUTPUT_NAME = "probabilities"


@dataclass
class LinearHead:
    """W (dim, k) and b (k,) acting on raw embeddings (standardisation already folded in).

    For a binary head k == 1: the single column's sigmoid is the positive label's probability.
    """

    kind: str  # "multiclass" | "binary"
    weights: np.ndarray
    bias: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, labels) probabilities, computed exactly as the ONNX graph does (float32)."""
        z = x.astype(np.float32) @ self.weights.astype(np.float32) + self.bias.astype(np.float32)
        if self.kind == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1).astype(np.float32)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Per-class weights: "balanced" = n / (k * n_c) (absent classes get 0), "none" = 1."""
    if mode == "none":
        return np.ones(n_classes)
    if mode != "balanced":
        raise ValueError(f"class weighting must be 'balanced' or 'none', not {mode!r}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


def lbfgs(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int = 300,
          tol: float = 1e-6, memory: int = 10) -> np.ndarray:
    """Minimise a smooth convex function given value-and-gradient; plain L-BFGS with Armijo backtracking."""
    x = x0.copy()
    f, g = fun(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        if np.linalg.norm(g, ord=np.inf) < tol:
            break
        # Two-loop recursion for the search direction.
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(yv @ s)
            a = rho * float(s @ q)
            alphas.append((rho, a))
            q -= a * yv
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        for (s, yv), (rho, a) in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += (a - rho * float(yv @ q)) * s
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            d, slope = -g, -float(g @ g)
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = x_new - x, g_new - g
        if float(s @ yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(f - f_new) <= tol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, kind: str, l2: float = 1e-2,
        weighting: str = "balanced", max_iter: int = 300) -> LinearHead:
    """Train a head. ``y`` holds class indices; for ``kind="binary"`` index 1 is the positive label."""
    if kind not in ("multiclass", "binary"):
        raise ValueError(f"kind must be multiclass or binary, not {kind!r}")
    if kind == "binary" and n_classes != 2:
        raise ValueError("a binary head has exactly two labels (negative, positive)")
    x64 = np.asarray(x, dtype=np.float64)
    n, dim = x64.shape
    mean = x64.mean(axis=0)
    std = x64.std(axis=0) + 1e-6
    z = (x64 - mean) / std
    sw = class_weights(y, n_classes, weighting)[y]
    sw = sw / sw.sum()
    k = 1 if kind == "binary" else n_classes

    if kind == "binary":
        t = (y == 1).astype(np.float64)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:dim], theta[dim]
            logits = z @ w + b
            # log(1 + e^-|l|) formulation: stable for large |logits|.
            ce = np.logaddexp(0.0, logits) - t * logits
            p = 1.0 / (1.0 + np.exp(-logits))
            r = sw * (p - t)
            value = float(sw @ ce) + 0.5 * l2 * float(w @ w)
            return value, np.concatenate([z.T @ r + l2 * w, [r.sum()]])
    else:
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y] = 1.0

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[: dim * k].reshape(dim, k)
            b = theta[dim * k :]
            logits = z @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            logsum = np.log(np.exp(logits).sum(axis=1))
            value = float(sw @ (logsum - (logits * onehot).sum(axis=1))) + 0.5 * l2 * float((w * w).sum())
            p = np.exp(logits - logsum[:, None])
            r = sw[:, None] * (p - onehot)
            return value, np.concatenate([(z.T @ r + l2 * w).ravel(), r.sum(axis=0)])

    theta = lbfgs(loss, np.zeros(dim * k + k), max_iter=max_iter)
    w = theta[: dim * k].reshape(dim, k)
    b = theta[dim * k :]
    # Fold the standardisation in: ((x - mean) / std) @ w + b == x @ (w / std) + (b - (mean / std) @ w).
    w_raw = w / std[:, None]
    b_raw = b - (mean / std) @ w
    return LinearHead(kind, w_raw.astype(np.float32), b_raw.astype(np.float32))


def to_onnx(head: LinearHead, name: str) -> onnx.ModelProto:
    """embedding float32 [batch, dim] -> probabilities float32 [batch, labels]."""
    k_out = 2 if head.kind == "binary" else head.weights.shape[1]
    inits = [numpy_helper.from_array(head.weights.astype(np.float32), "W"),
             numpy_helper.from_array(head.bias.astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", [INPUT_NAME, "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])]
    if head.kind == "binary":
        inits.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        nodes += [helper.make_node("Sigmoid", ["logits"], ["p"]), helper.make_node("Sub", ["one", "p"], ["q"]),
                  helper.make_node("Concat", ["q", "p"], [OUTPUT_NAME], axis=1)]
    else:
        nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1))
    return head_model(nodes, inits, name, head.dim, k_out)


def head_model(nodes: list, inits: list, name: str, dim: int, outputs: int) -> onnx.ModelProto:
    """A head's ONNX model: `nodes` map INPUT_NAME [batch, dim] to OUTPUT_NAME [batch, outputs] (checked)."""
    graph = helper.make_graph(
        nodes, f"switchpoint-head-{name}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", outputs])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="switchpoint")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
