"""What the router refuses, and why: one hierarchy for every stage and every front door.

The core raises these with a message that names the cause (the field, the pool, the budget); each
front door maps `kind` to its own status at the edge: a gRPC status code for the Router service, an
HTTP status (and an OpenAI-style error body) for the Envoy front door. Nothing inside the core knows
either mapping.
"""

from __future__ import annotations

from typing import ClassVar


class Refusal(Exception):
    kind: ClassVar[str] = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(Refusal):
    """The request itself is wrong (a field, a size, a context larger than any candidate pool)."""

    kind = "invalid"


class NotFound(Refusal):
    """An unknown model or alias; a settlement for a request id that is not in flight."""

    kind = "not_found"


class AlreadyExists(Refusal):
    """A request id that is already in flight."""

    kind = "already_exists"


class Unavailable(Refusal):
    """Nothing can serve it now: no ready replica, a Closed budget with its ledger down, a failed classifier."""

    kind = "unavailable"


class FailedPrecondition(Refusal):
    """The router is not set up for what the config asks (a classifier signal without models)."""

    kind = "failed_precondition"


class BudgetExhausted(Refusal):
    """A Reject budget is spent. `retry_after_s`: seconds until it frees up, when the window's end is known."""

    kind = "budget_exhausted"

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s
