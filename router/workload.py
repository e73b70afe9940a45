"""The Workload dimension of the matrix: what kind of work a request is.

Deterministic rules over the request alone:
- agent when tools are present or the `x-switchpoint-agent` header is set, else chat;
- multi-turn when the conversation already has an assistant turn or more than one user turn;
- prefill-heavy when the input tokens are at least PREFILL_HEAVY_RATIO times the expected
  output tokens (max_tokens, or DEFAULT_EXPECTED_OUTPUT when not given), else decode-heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchpoint.router.request import RouteInput

AGENT_HEADER = "x-switchpoint-agent"
PREFILL_HEAVY_RATIO = 4
DEFAULT_EXPECTED_OUTPUT = 256


@dataclass(frozen=True)
class Workload:
    agent: bool
    multi_turn: bool
    prefill_heavy: bool

    @property
    def label(self) -> str:
        return "/".join((
            "agent" if self.agent else "chat",
            "multi" if self.multi_turn else "single",
            "prefill" if self.prefill_heavy else "decode",
        ))


def classify(req: RouteInput) -> Workload:
    expected_output = req.max_tokens or DEFAULT_EXPECTED_OUTPUT
    return Workload(
        agent=req.tools_present or AGENT_HEADER in req.metadata,
        multi_turn=len(req.messages) > 1 and (req.user_turns > 1 or any(m.role == "assistant" for m in req.messages)),
        prefill_heavy=req.input_tokens >= PREFILL_HEAVY_RATIO * expected_output,
    )
