"""Replica scheduling and the in-flight ledger."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest

from switchpoint.config.model import Candidate, Decision, Pool, Pricing, Replica, Role
from switchpoint.router.errors import RouteError
from switchpoint.router.inflight import InflightEntry, InflightLedger
from switchpoint.router.scheduling import LeastInflightScheduler
from switchpoint.router.selection import select_static


def pool(name: str, *replicas: Replica, context: int = 8192) -> Pool:
    return Pool("default", name, (f"{name}-model",), "gpu", context, Pricing(), replicas)


def entry(rid: str, replica: str, prefill: str = "", started: float = 0.0) -> InflightEntry:
    return InflightEntry(rid, "p", "d", "pool", "m", replica, prefill, started=started)


def test_least_inflight_spreads_load_evenly():
    ledger = InflightLedger()
    sched = LeastInflightScheduler(ledger)
    p = pool("a", Replica("h:1"), Replica("h:2"), Replica("h:3"))
    for i in range(30):
        ledger.admit(entry(str(i), sched.place(p).replica.address, started=1e9))
    assert Counter(ledger.loads().values()) == Counter({10: 3})


def test_the_least_loaded_replica_wins_over_rotation():
    ledger = InflightLedger()
    sched = LeastInflightScheduler(ledger)
    for i in range(3):
        ledger.admit(entry(f"x{i}", "h:1", started=1e9))
    p = pool("a", Replica("h:1"), Replica("h:2"))
    assert {sched.place(p).replica.address for _ in range(5)} == {"h:2"}


def test_disaggregated_pools_get_a_decode_destination_and_a_prefill_replica():
    sched = LeastInflightScheduler(InflightLedger())
    p = pool("pd", Replica("p:1", Role.PREFILL), Replica("d:1", Role.DECODE), Replica("d:2", Role.DECODE))
    placement = sched.place(p)
    assert placement.replica.address.startswith("d:") and placement.prefill.address == "p:1"
    assert {placement.replica.address, *(r.address for r in placement.alternatives)} == {"d:1", "d:2"}


def test_a_pool_of_only_prefill_replicas_cannot_serve():
    sched = LeastInflightScheduler(InflightLedger())
    p = pool("pre", Replica("p:1", Role.PREFILL))
    assert sched.place(p) is None
    with pytest.raises(RouteError) as caught:
        select_static(Decision("d", 1, None, (Candidate(p, "m"),)), 10, sched)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and "pool(s) 'pre'" in caught.value.message


def test_selection_skips_pools_too_small_and_orders_fallbacks():
    sched = LeastInflightScheduler(InflightLedger())
    small = pool("small", Replica("s:1"), context=1000)
    big = pool("big", Replica("b:1"), Replica("b:2"), context=100_000)
    other = pool("other", Replica("o:1"), context=100_000)
    decision = Decision("d", 1, None, (Candidate(small, "m"), Candidate(big, "m"), Candidate(other, "m")))
    sel = select_static(decision, 5000, sched)
    assert sel.candidate.pool.name == "big"
    assert [f.candidate.pool.name for f in sel.fallbacks] == ["big", "other"]
    assert "context 1000 < 5000" in sel.skipped[0]


def test_a_request_larger_than_every_pool_is_invalid():
    sched = LeastInflightScheduler(InflightLedger())
    decision = Decision("d", 1, None, (Candidate(pool("small", Replica("s:1"), context=1000), "m"),))
    with pytest.raises(RouteError) as caught:
        select_static(decision, 5000, sched)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "about 5000 tokens" in caught.value.message


def test_ledger_settles_counts_prefill_and_expires():
    ledger = InflightLedger(ttl_s=10)
    ledger.admit(entry("a", "d:1", "p:1", started=100.0))
    ledger.admit(entry("b", "d:1", started=105.0))
    assert ledger.loads() == {"d:1": 2, "p:1": 1}
    assert ledger.settle("a").replica == "d:1"
    assert ledger.settle("a") is None
    assert ledger.expire(now=116.0) == 1
    assert ledger.loads() == {} and len(ledger) == 0


def test_ledger_is_bounded():
    ledger = InflightLedger(ttl_s=1e9, max_entries=3)
    for i in range(5):
        ledger.admit(entry(str(i), "h:1", started=float(i)))
    assert len(ledger) == 3 and "0" not in ledger and ledger.load("h:1") == 3
    assert ledger.expired_total == 2
