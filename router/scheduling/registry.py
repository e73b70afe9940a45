"""A named registry for one scheduling extension point (filters, scorers, pickers).

In the spirit of the Gateway API Inference Extension's plugin framework: a plugin is a function in
its own module, registered there under the name configs use (`@SCORERS.register("queue")`); the
scheduler looks names up here, and tests/test_scheduling_registry.py ties the names to the CRD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(plugin: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = plugin
            return plugin

        return add
