"""The prepared snapshot: a config and everything it needs to serve, built off the event loop, swapped whole.

Preparing compiles nothing new: it takes a compiled RouterConfig and loads what its policies name —
encoders, classifier heads, example embeddings (`ModelBank`), and a selector per non-static decision
(`SelectorBank`) — into new immutable objects. Nothing that serves is touched while it runs, so a
config refused half-way (a dataset that cannot be opened in the second decision, say) leaves the
snapshot in force exactly as it was. The router swaps the reference in one assignment; a request
keeps the snapshot it started with until it is answered.

`switchpoint check` runs the same preparation, so it refuses what a router would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from switchpoint.config.compiler import load_config
from switchpoint.config.model import RouterConfig
from switchpoint.router.classifiers.bank import ModelBank, Models
from switchpoint.router.selecting import SelectorBank, Selectors


@dataclass(frozen=True)
class Snapshot:
    config: RouterConfig
    models: Models
    selectors: Selectors

    @property
    def digest(self) -> str:
        return self.config.digest


class Preparer:
    """Builds snapshots, reusing what the previous one loaded (files, unchanged selectors and bandit states)."""

    def __init__(self, bank: ModelBank, selectors: SelectorBank):
        self.bank = bank
        self.selectors = selectors

    def prepare(self, config: RouterConfig, previous: Snapshot | None = None) -> Snapshot:
        """Load what the config needs; ConfigError (naming the object and field) refuses it. Blocking I/O:
        call it in a worker thread from the event loop."""
        models = self.bank.prepare(config)
        selectors = self.selectors.prepare(config, models, previous.selectors if previous else None)
        return Snapshot(config, models, selectors)

    def load(self, paths: list[str | Path], previous: Snapshot | None = None) -> Snapshot:
        """Compile the manifests and prepare them."""
        return self.prepare(load_config(paths), previous)


def check_files(paths: list[str | Path], models_dir: Path | None = None) -> Snapshot:
    """What `switchpoint check` runs: compile and prepare as a router would (ConfigError if it would refuse)."""
    return Preparer(ModelBank(models_dir), SelectorBank()).load(paths)
