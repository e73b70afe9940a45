"""Passive health in the router: errors reported for a replica take it out of rotation, in a pool without scraped
metrics (where scraping cannot notice a dead replica), and a pool whose replicas all failed is still served."""

from __future__ import annotations

from collections import Counter

from switchpoint.v1 import router_pb2

from .conftest import ThreadedRouter, chat


def _report(router: ThreadedRouter, decision: router_pb2.Decision, outcome: int) -> None:
    router.stub.Report(router_pb2.ReportRequest(request_id=decision.request_id, outcome=outcome), timeout=5)


def test_reported_errors_eject_a_replica_of_an_unscraped_pool(router: ThreadedRouter):
    dead = None
    failures = 0
    while failures < 3:  # the default outlier policy: three consecutive failures
        d = router.stub.Route(chat("hello there"), timeout=5)
        assert d.pool == "small-chat"
        dead = dead or d.replica
        _report(router, d, router_pb2.OUTCOME_ERROR if d.replica == dead else router_pb2.OUTCOME_SUCCESS)
        failures += d.replica == dead
    picks = Counter()
    for _ in range(20):
        d = router.stub.Route(chat("hello there"), timeout=5)
        picks[d.replica] += 1
        _report(router, d, router_pb2.OUTCOME_SUCCESS)
    assert dead not in picks and sum(picks.values()) == 20


def test_a_pool_whose_replicas_all_failed_is_still_served(router: ThreadedRouter):
    seen: Counter[str] = Counter()
    for _ in range(12):
        d = router.stub.Route(chat("hello there"), timeout=5)
        seen[d.replica] += 1
        _report(router, d, router_pb2.OUTCOME_ERROR)
    d = router.stub.Route(chat("hello there"), timeout=5)  # panic: better a try than a refusal for all
    assert d.pool == "small-chat" and d.replica in seen
