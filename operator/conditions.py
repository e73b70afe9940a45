"""Status conditions in the Kubernetes convention (type, status, reason, message, observedGeneration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ACCEPTED, RESOLVED_REFS, READY, CONFLICTED = "Accepted", "ResolvedRefs", "Ready", "Conflicted"
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def as_dict(self, generation: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "status": "True" if self.status else "False",
                               "reason": self.reason, "message": self.message[:MAX_MESSAGE]}
        if generation is not None:
            out["observedGeneration"] = generation
        return out


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(current: list[dict[str, Any]] | None, wanted: list[Condition], generation: int | None,
                     timestamp: str) -> list[dict[str, Any]]:
    """The wanted conditions, keeping lastTransitionTime where a condition's status did not change."""
    previous = {c.get("type"): c for c in current or ()}
    merged = []
    for condition in wanted:
        entry = condition.as_dict(generation)
        before = previous.get(condition.type)
        same = before is not None and before.get("status") == entry["status"] and before.get("lastTransitionTime")
        entry["lastTransitionTime"] = before["lastTransitionTime"] if same else timestamp
        merged.append(entry)
    return merged
