"""Configuration problems that name the file, the object and the field path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    source: str  # file (and document index) the object came from
    obj: str  # "Kind namespace/name", or "" when the file itself is at fault
    field: str  # field path like spec.decisions[1].when.all[0].signal, or ""
    message: str

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.obj, self.field) if part)
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be compiled; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def field_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """Render a path like ('spec', 'decisions', 1, 'when') as spec.decisions[1].when."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
