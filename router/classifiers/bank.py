"""The models a config needs (encoders, heads, example embeddings), loaded before the config serves.

Loading is I/O and takes from milliseconds (a head) to a second (the transformer), so it happens
when a config is loaded or reloaded, never on a request: a config whose heads cannot be loaded, or
whose signals ask a head for labels it does not have, is refused like any other broken config, and
the one in force keeps serving. `ModelBank.prepare` returns an immutable `Models` for one config
(it becomes part of the router's snapshot) and changes nothing a serving snapshot uses. The bank
keeps loaded files by name or source so that a reload reuses them (a head is reloaded when its
files change on disk), and `retain` forgets what the config in force no longer names.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from switchpoint.config.errors import ConfigError, Problem
from switchpoint.config.model import ClassifierSignal, ClassifierSpec, Policy, RouterConfig, SimilaritySignal
from switchpoint.router.classifiers.encoder import Encoder, EncoderError, load_encoder
from switchpoint.router.classifiers.head import Head, HeadError, load_head
from switchpoint.router.selectors.registry import selection_algorithm


@dataclass(frozen=True)
class LoadedClassifier:
    spec: ClassifierSpec
    head: Head
    encoder: Encoder
    thresholds: dict[str, float]  # the head's own, overridden by the policy's

    @property
    def positive_label(self) -> str:
        return self.head.labels[-1]


ExamplesKey = tuple[str, tuple[str, ...]]  # (encoder, examples)


@dataclass(frozen=True)
class Models:
    """What one config loaded: its encoders, classifiers (by policy key and name) and example embeddings."""

    encoders: Mapping[str, Encoder] = field(default_factory=dict)
    classifiers: Mapping[tuple[str, str], LoadedClassifier] = field(default_factory=dict)
    example_embeddings: Mapping[ExamplesKey, np.ndarray] = field(default_factory=dict)

    def encoder(self, name: str) -> Encoder:
        found = self.encoders.get(name)
        if found is None:
            raise EncoderError(f"encoder '{name}' is not loaded by the config in force")
        return found

    def classifier(self, policy: Policy, name: str) -> LoadedClassifier:
        return self.classifiers[(policy.key, name)]

    def examples(self, signal: SimilaritySignal) -> np.ndarray:
        """The L2-normalised embeddings of a similarity signal's examples, one row each."""
        return self.example_embeddings[(signal.encoder, signal.examples)]


class ModelBank:
    def __init__(self, models: Path | None = None):
        self.models = models
        self._encoders: dict[str, Encoder] = {}
        self._heads: dict[str, tuple[tuple[float, ...], Head]] = {}  # source -> (file mtimes, head)
        self._examples: dict[ExamplesKey, np.ndarray] = {}
        self._lock = threading.Lock()  # prepare() runs in a worker thread, one at a time

    def encoder(self, name: str) -> Encoder:
        """A loaded encoder (loaded now if this bank has not loaded it yet): for tools and preparation."""
        found = self._encoders.get(name)
        if found is None:
            found = self._encoders[name] = load_encoder(name, self.models)
        return found

    def prepare(self, config: RouterConfig, encoders: set[str] | None = None) -> Models:
        """Load everything the config's policies need; ConfigError naming the policy and field otherwise.

        `encoders` adds encoders needed outside signals; those of a decision's cache and selection
        settings are added here from the config itself.
        """
        with self._lock:
            return self._prepare(config, set(encoders or ()))

    def _prepare(self, config: RouterConfig, wanted: set[str]) -> Models:
        problems: list[Problem] = []
        classifiers: dict[tuple[str, str], LoadedClassifier] = {}
        examples: dict[ExamplesKey, np.ndarray] = {}
        for policy in config.policies.values():
            obj = f"RoutingPolicy {policy.key}"
            for decision in (*policy.decisions, policy.default):
                if decision.cache.enabled:
                    wanted.add(decision.cache.encoder)
                if selection_algorithm(decision.selection.algorithm).needs_embedding:
                    wanted.add(decision.selection.encoder)
            for spec in policy.classifiers:
                loaded = self._load_classifier(policy, spec, obj, problems)
                if loaded is not None:
                    classifiers[(policy.key, spec.name)] = loaded
                    wanted.add(loaded.head.encoder)
            for i, signal in enumerate(policy.signals):
                if isinstance(signal, ClassifierSignal):
                    self._check_labels(classifiers, policy, signal, f"spec.signals[{i}].classifier", obj, problems)
                elif isinstance(signal, SimilaritySignal):
                    wanted.add(signal.encoder)
                    try:
                        examples[(signal.encoder, signal.examples)] = self._example_embeddings(signal)
                    except EncoderError as exc:
                        problems.append(Problem("", obj, f"spec.signals[{i}].similarity.encoder", str(exc)))
        encoders: dict[str, Encoder] = {}
        for name in sorted(wanted):
            try:
                encoders[name] = self.encoder(name)
            except EncoderError as exc:
                problems.append(Problem("", "", "", f"encoder '{name}': {exc}"))
        if problems:
            raise ConfigError(problems)
        return Models(MappingProxyType(encoders), MappingProxyType(classifiers), MappingProxyType(examples))

    def retain(self, models: Models) -> None:
        """Forget loaded files the snapshot in force does not use (a reload loads them again if named)."""
        with self._lock:
            heads = {c.spec.source for c in models.classifiers.values()}
            for name in set(self._encoders) - set(models.encoders):
                del self._encoders[name]
            for source in set(self._heads) - heads:
                del self._heads[source]
            for key in set(self._examples) - set(models.example_embeddings):
                del self._examples[key]

    def _example_embeddings(self, signal: SimilaritySignal) -> np.ndarray:
        key = (signal.encoder, signal.examples)
        found = self._examples.get(key)
        if found is None:
            found = self._examples[key] = self.encoder(signal.encoder).encode(list(signal.examples))
        return found

    def _load_classifier(self, policy: Policy, spec: ClassifierSpec, obj: str,
                         problems: list[Problem]) -> LoadedClassifier | None:
        field = "spec.signals" if spec.declared_at is None else f"spec.classifiers[{spec.declared_at}]"
        try:
            head = self._head(spec.source)
            encoder = self.encoder(head.encoder)
        except (HeadError, EncoderError) as exc:
            problems.append(Problem("", obj, field, f"classifier '{spec.name}' ({spec.source}): {exc}"))
            return None
        unknown = sorted(label for label, _ in spec.thresholds if label not in head.labels)
        if unknown:
            problems.append(Problem("", obj, f"{field}.thresholds",
                                    f"classifier '{spec.name}' has no label(s) {', '.join(unknown)} "
                                    f"(its labels: {', '.join(head.labels)})"))
            return None
        return LoadedClassifier(spec, head, encoder, {**head.thresholds, **dict(spec.thresholds)})

    def _head(self, source: str) -> Head:
        stamp = _stamp(source)
        cached = self._heads.get(source)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        head = load_head(source, self.models)
        self._heads[source] = (stamp, head)
        return head

    @staticmethod
    def _check_labels(classifiers: Mapping[tuple[str, str], LoadedClassifier], policy: Policy,
                      signal: ClassifierSignal, field: str, obj: str, problems: list[Problem]) -> None:
        loaded = classifiers.get((policy.key, signal.classifier))
        if loaded is None:
            return  # its loading problem is already reported
        head = loaded.head
        if signal.labels is None and head.kind != "binary":
            problems.append(Problem("", obj, f"{field}.labels",
                                    f"classifier '{signal.classifier}' has {len(head.labels)} labels: say which "
                                    f"fire the signal (one or more of {', '.join(head.labels)})"))
            return
        unknown = [label for label in signal.labels or () if label not in head.labels]
        if unknown:
            problems.append(Problem("", obj, f"{field}.labels",
                                    f"classifier '{signal.classifier}' has no label(s) {', '.join(unknown)} "
                                    f"(its labels: {', '.join(head.labels)})"))


def _stamp(source: str) -> tuple[float, ...]:
    """The modification times of a local head's files (empty for URLs and built-ins)."""
    path = Path(source.removeprefix("file://"))
    try:
        return tuple((path / name).stat().st_mtime_ns for name in ("head.json", "head.onnx")) if path.is_dir() else ()
    except OSError:
        return ()
