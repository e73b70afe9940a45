"""The scheduling bench's "within a pool, never behind" verdict, cell by cell (a pure function of the results)."""

from __future__ import annotations

import pytest

from switchpoint.bench.scheduling import never_behind


def cell(sp_slo: float, sp_p99: float, gie_slo: float = 0.99, gie_p99: float = 1000.0,
         other_slo: float = 0.98) -> dict:
    return {"switchpoint": {"slo_attainment": sp_slo, "ttft_p99_ms": sp_p99},
            "gie_default": {"slo_attainment": gie_slo, "ttft_p99_ms": gie_p99},
            "round_robin": {"slo_attainment": other_slo, "ttft_p99_ms": 5000.0}}


@pytest.mark.parametrize("by_policy, behind", [
    (cell(0.99, 900), False),  # ahead on both
    (cell(0.981, 1000), False),  # 0.9 points under the best baseline: within one point
    (cell(0.979, 1000), True),  # 1.1 points under
    (cell(0.99, 1100), False),  # p99 exactly 1.1 x gie_default's
    (cell(0.99, 1101), True),  # just over
    (cell(0.995, 1000, gie_slo=0.90, other_slo=0.999), False),  # the best baseline need not be gie_default
    (cell(0.985, 1000, gie_slo=0.90, other_slo=0.999), True),
])
def test_a_cell_is_behind_when_it_trails_the_best_baseline_by_a_point_or_gie_by_ten_percent(by_policy, behind):
    assert never_behind({"chat": {"20": by_policy}}) == (["chat @ 20"] if behind else [])


def test_every_cell_is_checked_and_named():
    results = {"chat": {"16": cell(0.99, 900), "20": cell(0.99, 1200)}, "mixed": {"3": cell(0.9, 900)}}
    assert never_behind(results) == ["chat @ 20", "mixed @ 3"]
