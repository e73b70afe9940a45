"""The pair verifier: is a stored request's answer right for this request? Read on candidate hits only.

The vector tier proposes the nearest entries of a scope at or above the similarity threshold; the guard
(guard.salient) and the rules that never err in the answer's favour (swapped roles, a different who / when /
where / why) reject what they can prove different. What is left is judged by a logistic regression over the
two texts' comparison (guard.compare: shared and covered content words, token alignment, a swapped content
word, how many content words each text has) and their cosine similarity. It is trained offline on
data/cache/pairs.jsonl by `python -m switchpoint.router.cache.training` (numpy only) and shipped as
verifier_model.py; no model file is read at run time.

Precision is the knob: the model's score threshold for a target precision comes from a calibration table of
out-of-fold scores (5-fold cross-validation on the pairs), so a decision can ask for 0.99 and get fewer hits,
or 0.9 and get more. A target the table cannot reach turns the vector tier off (only exact hits remain).
The table was measured on the development pairs: data/cache/heldout.jsonl (never used for training, the
features or the rules) is what `switchpoint bench cache` reports precision and hit rate on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from switchpoint.router.cache.guard import Comparison, compare

# Targets a decision may ask for (CacheConfig.target_precision). The default was chosen on the calibration table
# alone (before the held-out pairs were scored): the highest target whose calibrated hit rate is >= 0.6.
DEFAULT_TARGET_PRECISION = 0.97
MIN_TARGET_PRECISION, MAX_TARGET_PRECISION = 0.5, 1.0

# Not the cosine: on the development pairs near misses are closer than paraphrases (they were written to be),
# so a learned weight on it comes out negative, which would turn away the near-duplicates real traffic repeats;
# the cosine gates candidates (the similarity threshold) and the verifier judges the texts, whatever the encoder.
FEATURES = ("shared_content", "covered", "frame_ratio", "swap", "swap_in_frame", "rule_same", "log_content_min",
            "content_gap", "extra_content")


def features(comparison: Comparison, cosine: float = 0.0) -> list[float]:
    c = comparison
    fewer, more = sorted(c.content)
    swap_in_frame = float(c.swap and c.frame_ratio >= 0.6)
    extra = more * (1.0 - c.covered)  # content words of the richer text the other lacks ("1 nautical mile")
    return [c.shared_content, c.covered, c.frame_ratio, float(c.swap), swap_in_frame, float(c.same),
            math.log1p(fewer), (more - fewer) / max(1, more), math.log1p(extra)]


@dataclass(frozen=True)
class Verifier:
    weights: tuple[float, ...]  # over the standardised FEATURES
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    # (score threshold, precision of scores >= it, paraphrase hit rate) on out-of-fold scores, thresholds rising;
    # precision made non-decreasing from the top (a threshold's figure is the worst of itself and all above)
    calibration: tuple[tuple[float, float, float], ...]

    def score(self, query: str, stored: str, cosine: float) -> float:
        """Probability-like score that stored's answer answers query."""
        return self.score_features(features(compare(query, stored), cosine))

    def score_features(self, row: Sequence[float]) -> float:
        z = self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, row, self.mean, self.scale,
                                                                  strict=True))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def threshold(self, target_precision: float) -> float:
        """The lowest score threshold whose calibrated precision reaches the target; > 1 when none does. Memoised
        per target (a scan of the table is ~10 us, on every verified candidate; targets come from the config)."""
        known = self._thresholds.get(target_precision)
        if known is not None:
            return known
        found = next((threshold for threshold, precision, _ in self.calibration if precision >= target_precision),
                     1.01)
        if len(self._thresholds) < 256:
            self._thresholds[target_precision] = found
        return found

    @functools.cached_property
    def _thresholds(self) -> dict[float, float]:
        return {}

    def accepts(self, query: str, stored: str, cosine: float, target_precision: float) -> bool:
        c = compare(query, stored)
        if c.roles_swapped or c.intent_differs:  # provably different questions, whatever the score
            return False
        return self.score_features(features(c, cosine)) >= self.threshold(target_precision)


def check_target(target_precision: float) -> float:
    """The target as a float, or ValueError naming the allowed range."""
    value = float(target_precision)
    if not MIN_TARGET_PRECISION <= value <= MAX_TARGET_PRECISION:
        raise ValueError(f"target precision {value} is outside [{MIN_TARGET_PRECISION}, {MAX_TARGET_PRECISION}]")
    return value


def default_verifier() -> Verifier:
    from switchpoint.router.cache import verifier_model as m

    return Verifier(tuple(m.WEIGHTS), m.BIAS, tuple(m.MEAN), tuple(m.SCALE), tuple(map(tuple, m.CALIBRATION)))
