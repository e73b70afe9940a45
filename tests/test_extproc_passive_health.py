"""Passive health: consecutive failures eject a replica for a growing backoff, as Envoy's outlier detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.router.passive_health import OutlierPolicy, PassiveHealth

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


def fail(health: PassiveHealth, address: str, times: int, now: float) -> None:
    for _ in range(times):
        health.record(address, False, now)


def test_consecutive_failures_eject_and_the_replica_comes_back_after_the_ejection_time() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=3, base_ejection_s=5, max_ejection_s=300))
    fail(health, A, 2, now=0.0)
    assert health.in_rotation(A, 0.0)
    health.record(A, False, 0.1)
    assert not health.in_rotation(A, 0.1)
    assert health.ejected_for(A, 0.1) == pytest.approx(5.0)
    assert health.in_rotation(B, 0.1)
    assert health.in_rotation(A, 5.1)


def test_a_success_breaks_the_run_of_failures() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=3))
    for t in range(10):
        fail(health, A, 2, now=float(t))
        health.record(A, True, t + 0.5)
    assert health.in_rotation(A, 10.0)


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=1, base_ejection_s=10, max_ejection_s=25))
    now, durations = 0.0, []
    for _ in range(4):
        health.record(A, False, now)
        durations.append(health.ejected_for(A, now))
        now += durations[-1]  # fails again the moment it is back
    assert durations == [10, 20, 25, 25]


def test_time_back_in_rotation_forgets_past_ejections() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=1, base_ejection_s=10, max_ejection_s=300))
    health.record(A, False, 0.0)  # out 0..10
    health.record(A, False, 10.0)  # out 10..30 (second ejection)
    health.record(A, True, 80.0)  # 50 s calm: both ejections forgotten
    health.record(A, False, 80.0)
    assert health.ejected_for(A, 80.0) == pytest.approx(10.0)


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=2, base_ejection_s=5))
    fail(health, A, 2, now=0.0)
    fail(health, A, 10, now=1.0)  # requests that were already in flight
    assert health.in_rotation(A, 5.0)


def test_usable_keeps_every_replica_when_all_are_out() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=1))
    health.record(A, False, 0.0)
    assert health.usable([A, B], 0.0) == [B]
    health.record(B, False, 0.0)
    assert health.usable([A, B], 0.0) == [A, B]


def test_forget_drops_replicas_no_longer_in_a_pool() -> None:
    health = PassiveHealth(OutlierPolicy(consecutive_failures=1))
    health.record(A, False, 0.0)
    health.forget([B])
    assert health.in_rotation(A, 0.0)


@pytest.mark.parametrize("kwargs", [{"consecutive_failures": 0}, {"base_ejection_s": 0},
                                    {"base_ejection_s": 10, "max_ejection_s": 5}])
def test_bad_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        OutlierPolicy(**kwargs)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=60))
def test_never_out_longer_than_the_cap_and_successes_alone_never_eject(events: list[tuple[bool, float]]) -> None:
    policy = OutlierPolicy(consecutive_failures=2, base_ejection_s=3, max_ejection_s=12)
    health, now = PassiveHealth(policy), 0.0
    for ok, gap in events:
        now += gap
        health.record(A, ok, now)
        health.record(B, True, now)
        assert health.ejected_for(A, now) <= policy.max_ejection_s
        assert health.in_rotation(B, now)
