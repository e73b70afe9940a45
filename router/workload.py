"""The Workload dimension of the matrix: what kind of work a request is.

Deterministic rules over the request, with thresholds from the RoutingPolicy's
`spec.workload` (defaults in brackets):
- agent when tools are present or the agent header (`x-switchpoint-agent`) is set, else chat;
- multi-turn when the conversation already has an assistant turn or more than one user turn;
- prefill-heavy when the input tokens are at least `prefillHeavyRatio` (4) times the expected
  output tokens (max_tokens, or `defaultOutputTokens` (256) when not given), else decode-heavy;
- warm when the replica chosen is believed to hold at least `warmPrefixShare` (0.5) of the
  prompt already (the router's prefix index), else cold. Known only after placement.
The label has four parts, e.g. chat/single/decode/cold: 16 classes, a bounded metric label.
"""

from __future__ import annotations

import itertools

from switchpoint.config.model import WorkloadRules
from switchpoint.router.frozen import frozen
from switchpoint.router.request import RouteInput


@frozen
class Workload:
    agent: bool
    multi_turn: bool
    prefill_heavy: bool
    warm: bool = False

    @property
    def label(self) -> str:
        return LABELS[self.agent, self.multi_turn, self.prefill_heavy, self.warm]


# the 16 labels, built once (a Route asks for its label for the metrics, the ticket and the trace)
LABELS = {(a, m, p, w): "/".join(("agent" if a else "chat", "multi" if m else "single", "prefill" if p else "decode",
                                  "warm" if w else "cold"))
          for a, m, p, w in itertools.product((False, True), repeat=4)}


def with_cache_state(workload: Workload, rules: WorkloadRules, input_tokens: int, uncached_tokens: int) -> Workload:
    """The Workload once the replica is chosen: warm if enough of the prompt is believed cached there."""
    warm = input_tokens > 0 and (input_tokens - uncached_tokens) >= rules.warm_prefix_share * input_tokens
    return Workload(workload.agent, workload.multi_turn, workload.prefill_heavy, warm)


def classify(req: RouteInput, rules: WorkloadRules) -> Workload:
    expected_output = req.max_tokens or rules.default_output_tokens
    return Workload(
        agent=req.tools_present or rules.agent_header in req.metadata,
        multi_turn=len(req.messages) > 1 and (req.user_turns > 1 or any(m.role == "assistant" for m in req.messages)),
        prefill_heavy=req.input_tokens >= rules.prefill_heavy_ratio * expected_output,
    )
