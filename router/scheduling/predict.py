"""Predicted time to first token of one request on the replica(s) a placement chose, from live state.

The joint decision (router/selection.py) asks this for each candidate pool of a decision with a latency
objective, and passes over a pool whose best replica would miss it. The model is the simulator's
(switchpoint/sim/engine.py, after llm-d-inference-sim) seen from the router:

    TTFT = iterations x (ITERATION_S + DECODE_S_PER_SEQ x running)     engine steps until this prompt is done
         + (backlog + uncached) / prefill rate                          the prefill queued ahead, then its own
         + min(backlog, chunk) / prefill rate                           the step granularity (below)
         + KV transfer                                                  disaggregated: the prefill replica's
                                                                        KV cache moved to the decode replica

where the backlog is the prefill the router has sent to the prefilling replica and not yet seen drain
(router/scheduling/backlog.py), `uncached` the prompt tokens not believed cached there, `iterations` the
chunks that backlog and prompt take (the pool's `chunkTokens`: vLLM's max_num_batched_tokens, 2,048 by
default) and `running` the decoding batch each step carries (scraped, fresh). The granularity term: on a
busy replica a new prompt waits for the step in progress, and its own last chunk is finished in a step
shared with the work queued behind it — about one chunk's time more than the fluid backlog says (the
simulator measured 2.5x the fluid prediction on a saturated 2,000 tokens/s pool without it). A replica whose
fresh KV-cache use is at or above KV_SATURATED cannot admit a new prefill until decodes free blocks: its
prediction is flagged `saturated` and counts as a miss, whatever the arithmetic says. Pure functions; the
constants are the anchors' reference values for an 8B model on one H100 (../shared/ANCHORS.md), the prefill
rate the policy's per pool.
"""

from __future__ import annotations

import math

from switchpoint.config.model import Candidate, SchedulingConfig
from switchpoint.router.frozen import frozen
from switchpoint.router.scheduling.scheduler import Placement, Scheduler
from switchpoint.router.scheduling.scorers import ITERATION_S

DECODE_S_PER_SEQ = 0.00008  # a step's extra time per decoding sequence (10.1 ms at 1, 15.1 ms at 64)
KV_TRANSFER_BASE_S = 0.005  # moving a prompt's KV cache from the prefill to the decode replica
KV_TRANSFER_S_PER_TOKEN = 0.000002
KV_SATURATED = 0.95  # fresh KV-cache use from which a replica admits no new prefill


@frozen
class Prediction:
    """A request's predicted TTFT on one placement, with its terms (seconds) for the evidence."""

    ttft_s: float
    queue_s: float  # the prefill backlog ahead on the prefilling replica, with the step granularity
    prefill_s: float  # this request's uncached prompt
    steps_s: float  # engine step overheads
    transfer_s: float  # the P/D KV transfer (0 when aggregated)
    saturated: bool = False  # KV cache full on the replica: admission waits for decodes to finish

    @property
    def ttft_ms(self) -> float:
        return self.ttft_s * 1000

    def misses(self, objective_s: float) -> bool:
        return self.saturated or self.ttft_s > objective_s

    def describe(self) -> str:
        parts = [f"queue {self.queue_s * 1e3:.0f}", f"prefill {self.prefill_s * 1e3:.0f}",
                 f"steps {self.steps_s * 1e3:.0f}"]
        if self.transfer_s:
            parts.append(f"transfer {self.transfer_s * 1e3:.0f}")
        detail = " + ".join(parts) + " ms"
        return f"{self.ttft_ms:.0f} ms ({detail}" + ("; KV cache saturated)" if self.saturated else ")")


def ttft(backlog_tokens: float, uncached_tokens: int, rate: float, running: float = 0.0, kv_usage: float = 0.0,
         transfer_tokens: int | None = None, chunk_tokens: int = SchedulingConfig.chunk_tokens) -> Prediction:
    """The formula of the module docstring. transfer_tokens: the prompt's tokens when disaggregated, else None."""
    work = max(0.0, backlog_tokens) + max(1, uncached_tokens)
    steps = math.ceil(work / chunk_tokens) * (ITERATION_S + DECODE_S_PER_SEQ * max(0.0, running))
    transfer = 0.0 if transfer_tokens is None else KV_TRANSFER_BASE_S + KV_TRANSFER_S_PER_TOKEN * transfer_tokens
    backlog = max(0.0, backlog_tokens)
    queue, own = (backlog + min(backlog, chunk_tokens)) / rate, max(1, uncached_tokens) / rate
    return Prediction(steps + queue + own + transfer, queue, own, steps, transfer, kv_usage >= KV_SATURATED)


def predict(scheduler: Scheduler, candidate: Candidate, placement: Placement, prompt_tokens: int) -> Prediction:
    """This request's TTFT on the placement the scheduler chose in the candidate's pool, as of now."""
    now = scheduler.clock()
    rate = candidate.scheduling.prefill_tokens_per_second
    prefilling = placement.prefill or placement.replica
    backlog = scheduler.backlog.tokens(prefilling.address, now, rate)
    fresh = scheduler.fleet.fresh(candidate.pool, prefilling, now)
    running = (fresh.running or 0.0) if fresh is not None else 0.0
    destination = scheduler.fleet.fresh(candidate.pool, placement.replica, now) if placement.prefill else fresh
    kv = max((m.kv_usage or 0.0) for m in (fresh, destination) if m is not None) \
        if fresh is not None or destination is not None else 0.0
    return ttft(backlog, placement.uncached_tokens, rate, running, kv,
                prompt_tokens if placement.prefill is not None else None, candidate.scheduling.chunk_tokens)
