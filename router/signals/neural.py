"""Classifier, similarity and PII signals: computed off the event loop, once per request at most.

Rule signals are pure functions evaluated inline; these need an encoder and perhaps a head, which
take from a fraction of a millisecond (static embeddings) to tens of milliseconds (the
transformer). They run on a small thread pool (onnxruntime releases the GIL while it computes),
so that one request's inference never stalls another request's rules-only route.

The pool's threads run under Linux's SCHED_IDLE policy (elsewhere, or if refused: nice +10), per thread:
when inference and routing want the same core, a routing thread that wakes up preempts inference at
once, so a burst of transformer inference delays other classifier requests (which degrade at their
deadline if the core stays saturated) rather than every rules-only route. Spare CPU still goes to
inference in full.

The decision stage asks for a signal only when a decision being checked needs it: the signal
board raises NeedsInference, the pipeline awaits `SignalInference.infer`, records the outcome and
checks the decisions again (memoised signals make the re-check cheap). Within a request, each
(encoder, text) is embedded once and each (classifier, text) is run once, whatever number of
signals test them.

A failure (an exception, or no answer within the classifier's timeoutMs) degrades the signal: it
counts as not fired, and its evidence says why. With onError Fail the request fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from switchpoint.config.model import ClassifierSignal, PiiSignal, Policy, SimilaritySignal
from switchpoint.router.classifiers.bank import LoadedClassifier, Models
from switchpoint.router.refusals import Unavailable
from switchpoint.router.request import RouteInput
from switchpoint.router.signals.rules import Inferred, NeuralSignal, pii_found, scoped_text

SIMILARITY_TIMEOUT_MS = 500
PII_TIMEOUT_MS = 2000  # the recognisers scan ~2.7 MB/s: a 4 MB prompt takes ~1.5 s
CLASSIFIER_NICENESS = 10


def _lower_priority() -> None:
    """Run in each classifier thread as it starts: lower this thread's scheduling priority (never raises)."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + CLASSIFIER_NICENESS)


@dataclass
class RequestInference:
    """What one request has computed so far: embeddings by (encoder, text), head outputs by (classifier, text).

    `models` are those of the snapshot the request started with: a reload during the request changes nothing
    it computes."""

    models: Models
    embeddings: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    outputs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    timings: list[tuple[str, float, str]] = field(default_factory=list)  # (what, ms, outcome) for traces


class SignalInference:
    def __init__(self, threads: int = 2, tracer: trace.Tracer | None = None):
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="switchpoint-classifier",
                                           initializer=_lower_priority)
        self.tracer = tracer or trace.NoOpTracer()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def embedding(self, state: RequestInference, encoder: str, text: str, timeout_ms: int) -> np.ndarray:
        """The request text's embedding under an encoder (memoised per request), computed off the loop."""
        key = (encoder, text)
        found = state.embeddings.get(key)
        if found is None:
            model = state.models.encoder(encoder)
            found = await self._off_loop(lambda: model.encode_one(text), timeout_ms)
            state.embeddings[key] = found
        return found

    async def infer(self, policy: Policy, signal: NeuralSignal, req: RouteInput,
                    state: RequestInference) -> Inferred:
        text = scoped_text(req, signal.scope)
        what = (f"classifier {signal.classifier}" if isinstance(signal, ClassifierSignal)
                else f"{'pii' if isinstance(signal, PiiSignal) else 'similarity'} {signal.name}")
        started = time.perf_counter()
        with self.tracer.start_as_current_span("switchpoint.classifier") as span:
            span.set_attribute("switchpoint.classifier", what)
            try:
                if isinstance(signal, ClassifierSignal):
                    loaded = state.models.classifier(policy, signal.classifier)
                    probs = await self._head_output(state, loaded, text)
                    result = classifier_outcome(signal, loaded, probs)
                elif isinstance(signal, PiiSignal):
                    found = await self._off_loop(lambda: pii_found(signal, text), PII_TIMEOUT_MS)
                    result = Inferred(bool(found), f"found {', '.join(found)}" if found else "none found")
                else:
                    emb = await self.embedding(state, signal.encoder, text, SIMILARITY_TIMEOUT_MS)
                    result = similarity_outcome(signal, emb, state.models.examples(signal))
            except Exception as exc:  # any failure of a model degrades (or fails) the signal, never the router
                ms = (time.perf_counter() - started) * 1000
                cause = "timed out" if isinstance(exc, TimeoutError) else f"failed: {type(exc).__name__}: {exc}"
                span.set_attribute("switchpoint.classifier.outcome", "degraded")
                state.timings.append((what, ms, "degraded"))
                if isinstance(signal, ClassifierSignal) and \
                        state.models.classifier(policy, signal.classifier).spec.on_error == "Fail":
                    raise Unavailable(
                        f"{what} {cause} and the policy says it must not degrade (onError: Fail)") from exc
                return Inferred(False, f"degraded: {what} {cause}; counted as not fired", degraded=True)
            ms = (time.perf_counter() - started) * 1000
            span.set_attribute("switchpoint.classifier.outcome", "fired" if result.fired else "not_fired")
            span.set_attribute("switchpoint.classifier.ms", ms)
            state.timings.append((what, ms, "ok"))
            return Inferred(result.fired, f"{result.evidence} ({ms:.2f} ms)")

    async def _head_output(self, state: RequestInference, loaded: LoadedClassifier, text: str) -> np.ndarray:
        key = (loaded.spec.name, text)
        found = state.outputs.get(key)
        if found is None:
            emb = await self.embedding(state, loaded.head.encoder, text, loaded.spec.timeout_ms)
            found = await self._off_loop(lambda: loaded.head.predict(emb[None, :])[0], loaded.spec.timeout_ms)
            state.outputs[key] = found
        return found

    async def _off_loop(self, work, timeout_ms: int):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self.executor, work), timeout_ms / 1000)


def classifier_outcome(signal: ClassifierSignal, loaded: LoadedClassifier, probs: np.ndarray) -> Inferred:
    """Whether a classifier signal fires on a head's probabilities (the rule the CRD states)."""
    labels = loaded.head.labels
    wanted = signal.labels or (loaded.positive_label,)
    scores = {label: float(probs[labels.index(label)]) for label in wanted}
    best_label = max(scores, key=scores.__getitem__)
    score = scores[best_label]
    if signal.above is not None:
        fired = score > signal.above
        rule = f"fires above {signal.above:g}"
    elif loaded.head.kind == "binary":
        threshold = loaded.thresholds.get(loaded.positive_label, 0.5)
        fired = float(probs[-1]) >= threshold
        rule = f"fires from {threshold:g}"
    else:
        top = labels[int(np.argmax(probs))]
        threshold = loaded.thresholds.get(top, 0.0)
        fired = top in wanted and float(np.max(probs)) >= threshold
        rule = "fires when top" + (f" and from {threshold:g}" if threshold else "")
    order = np.argsort(probs)[::-1][:3]
    top3 = ", ".join(f"{labels[i]} {probs[i]:.2f}" for i in order)
    return Inferred(fired, f"{signal.classifier}: {best_label} {score:.2f} ({rule}); top: {top3}")


def similarity_outcome(signal: SimilaritySignal, embedding: np.ndarray, examples: np.ndarray) -> Inferred:
    sims = examples @ embedding
    best = int(np.argmax(sims))
    example = signal.examples[best]
    shown = example if len(example) <= 60 else example[:57] + "..."
    return Inferred(float(sims[best]) >= signal.threshold,
                    f"similarity {float(sims[best]):.3f} to {shown!r} (threshold {signal.threshold:g})")
