"""@frozen builds the same values as @dataclass(frozen=True), with its own __init__ (router/frozen.py)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.router.frozen import frozen


@frozen
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: list[int] = dataclasses.field(default_factory=list)
    label: str = dataclasses.field(default="", kw_only=True)


@dataclasses.dataclass(frozen=True)
class Reference:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: list[int] = dataclasses.field(default_factory=list)
    label: str = dataclasses.field(default="", kw_only=True)


@frozen
class Key:
    x: int
    tags: tuple[str, ...]


@given(st.integers(), st.integers(), st.lists(st.text(max_size=3), max_size=3), st.text(max_size=5))
def test_same_fields_as_the_dataclass(x: int, y: int, tags: list[str], label: str) -> None:
    ours, theirs = Point(x, y, tuple(tags), label=label), Reference(x, y, tuple(tags), label=label)
    assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    assert ours == Point(x, y=y, tags=tuple(tags), label=label)
    assert Key(x, tuple(tags)) == Key(x, tuple(tags)) and hash(Key(x, tuple(tags))) == hash((x, tuple(tags)))


def test_defaults_and_factories() -> None:
    a, b = Point(1), Point(2)
    assert (a.y, a.tags, a.extra, a.label) == (0, (), [], "")
    assert a.extra is not b.extra  # a fresh list per instance, as default_factory promises


def test_still_frozen_hashable_replaceable_picklable() -> None:
    p = Point(1, 2, ("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    assert {Key(1, ("a",)): 1}[Key(1, ("a",))] == 1  # eq and hash of the fields, as frozen dataclasses have
    assert dataclasses.replace(p, y=5) == Point(1, 5, ("a",))
    assert pickle.loads(pickle.dumps(p)) == p
    assert repr(p) == "Point(x=1, y=2, tags=('a',), extra=[], label='')"


@pytest.mark.parametrize("call, error", [
    (lambda: Point(), "missing 1 required positional argument: 'x'"),
    (lambda: Point(1, 2, (), [], "l"), "takes from 2 to 5 positional arguments but 6 were given"),
    (lambda: Point(1, z=3), "unexpected keyword argument 'z'"),
])
def test_wrong_arguments_fail_as_for_any_function(call, error: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=error):
        call()


def test_post_init_runs() -> None:
    @frozen
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n: must not be negative")

    assert Checked(1).n == 1
    with pytest.raises(ValueError, match="must not be negative"):
        Checked(-1)


def test_what_it_cannot_build_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="init=False"):
        @frozen
        class Late:
            n: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="InitVar"):
        @frozen
        class WithInitVar:
            n: dataclasses.InitVar[int]
