"""`@frozen`: `@dataclass(frozen=True)` with an `__init__` that costs what a mutable dataclass's does.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (a global
lookup, an attribute lookup and a call per field, to get past the class's own `__setattr__`). A Route
builds about twenty such values (the workload, the decision's outcome, the placement, the selection, the
ticket, the answer, ...): measured here, a 16-field frozen `Routed` took 8.8 us to build against 3.8 us
with the `__init__` below, which fills the instance's `__dict__` in one call (allowed: the class's
`__setattr__` is what forbids assignment, not the dictionary).

Everything else is the dataclass's own: equality, hashing, `repr`, `replace`, the frozen `__setattr__`.
The generated `__init__` takes the same parameters (positional or keyword, defaults, default
factories, keyword-only fields) and calls `__post_init__` when the class has one. Classes with
`slots=True` (no `__dict__`), `InitVar`s or `init=False` fields are refused at decoration: use
`@dataclass(frozen=True)` for those.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def frozen(cls: type[T]) -> type[T]:
    cls = dataclasses.dataclass(frozen=True)(cls)
    cls.__init__ = _fast_init(cls)  # type: ignore[misc]
    return cls


def _fast_init(cls: type) -> Any:
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    positional, keyword, values = [], [], []
    for f in dataclasses.fields(cls):
        if not f.init:
            raise TypeError(f"@frozen {cls.__qualname__}.{f.name}: init=False fields are not supported")
        if f.default is not _MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param, value = f"{f.name}=_default_{f.name}", f.name
        elif f.default_factory is not _MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param, value = f"{f.name}=_MISSING", f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
        else:
            param, value = f.name, f.name
        (keyword if f.kw_only else positional).append(param)
        values.append(f"{f.name!r}: {value}")
    generated = list(inspect.signature(cls.__init__).parameters)[1:]
    if generated != [f.name for f in dataclasses.fields(cls)]:  # an InitVar is a parameter but not a field
        raise TypeError(f"@frozen {cls.__qualname__}: InitVar fields are not supported")
    if "__slots__" in cls.__dict__:
        raise TypeError(f"@frozen {cls.__qualname__}: slots=True classes have no __dict__ to fill")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    body = f"    self.__dict__.update({{{', '.join(values)}}})\n"
    if hasattr(cls, "__post_init__"):
        body += "    self.__post_init__()\n"
    exec(f"def __init__({params}):\n{body}", namespace)  # source from field names only, as dataclasses builds
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init
