"""Named scheduling profiles: filters, weighted scorers and a picker (GIE's filter -> scorers -> picker).

- switchpoint: predicted TTFT from the router's own prefill backlog and prefix affinity
  (one unit, time), weight 4, with KV-cache pressure, weight 1. (decode-interference is
  available to policies; on `switchpoint bench scheduling` adding it at weight 1 made TPOT
  no better and SLO attainment slightly worse, so the default leaves it out.)
- gie-default: the Gateway API Inference Extension's default (v1.5.0 Helm) profile:
  queue 2, kv-cache 2, prefix-cache 3, max-score picker with random ties.
- least-request: the router's own in-flight counts (llm-d's active-request scorer).
- round-robin, random: the classic baselines.

Adding a profile: an entry in PROFILES and its name in the CRD's enum (RoutingPolicy
spec.scheduling[].profile); tests/test_scheduling_registry.py fails until both agree and
every filter, scorer and picker it names is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchpoint.config.model import SchedulingConfig


@dataclass(frozen=True)
class Profile:
    name: str
    weights: tuple[tuple[str, float], ...]  # scorer name -> weight
    picker: str = "max-score"
    filters: tuple[str, ...] = ("ready",)


PROFILES = {p.name: p for p in (
    Profile("switchpoint", (("predicted-latency", 4.0), ("kv-cache", 1.0))),
    Profile("gie-default", (("queue", 2.0), ("kv-cache", 2.0), ("prefix-cache", 3.0))),
    Profile("least-request", (("least-request", 1.0),)),
    Profile("round-robin", (), picker="round-robin"),
    Profile("random", (), picker="random"),
)}


def profile_for(config: SchedulingConfig) -> Profile:
    """The named profile with the policy's weight overrides applied (weight 0 drops a scorer)."""
    base = PROFILES[config.profile]
    if not config.weights:
        return base
    weights = dict(base.weights)
    weights.update(config.weights)
    return Profile(base.name, tuple((n, w) for n, w in weights.items() if w > 0), base.picker, base.filters)
