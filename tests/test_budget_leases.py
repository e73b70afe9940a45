"""Budget leases (router/budget/lease.py) against a real Redis 8: admitted without a ledger call, given back in time,
never used near the limit or while the ledger is down, settled on any replica."""

from __future__ import annotations

import asyncio

import pytest

from switchpoint.router.budget.enforcer import BudgetEnforcer, BudgetLine
from switchpoint.router.budget.lease import LEASE_PERIOD_S, LEASE_REQUESTS, LeaseBook
from switchpoint.router.budget.ledger import RedisLedger
from switchpoint.v1 import router_pb2
from tests.conftest import ThreadedRouter, chat, wait_for
from tests.test_budget_ledger import budget, run
from tests.test_settle_anywhere import BUDGET, KEY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _script_calls(ledger: RedisLedger) -> int:
    """How many times Redis ran a script (EVALSHA / EVAL): the ledger calls made, as Redis counts them (a first
    EVALSHA refused with NOSCRIPT counts too)."""
    stats = await ledger.client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def _settled(book: LeaseBook) -> None:
    while book._tasks:  # the grants and releases under way
        await asyncio.sleep(0.01)


async def _admit(book: LeaseBook, enforcer: BudgetEnforcer, rid: str, units: int, b) -> bool:
    """What the budget gate does: from a lease if one fits, else a reservation of its own (which may ask for a
    lease); whether it came from a lease."""
    if book.take([BudgetLine(b, units)]) is not None:
        return True
    book.reserved((await enforcer.reserve(rid, [BudgetLine(b, units)])).lines)
    return False


def _book(url: str, clock: Clock, ttl_s: float = 600) -> tuple[RedisLedger, BudgetEnforcer, LeaseBook]:
    ledger = RedisLedger(url, timeout_s=2.0)
    enforcer = BudgetEnforcer(ledger, reservation_ttl_s=ttl_s)
    return ledger, enforcer, LeaseBook(enforcer, "test", clock=clock)


def test_after_the_first_lease_requests_are_admitted_without_a_ledger_call(redis_url):
    b, clock = budget(limit=1_000_000), Clock()

    async def body():
        ledger, enforcer, book = _book(redis_url, clock)
        try:
            line = [BudgetLine(b, 100)]
            first = await _admit(book, enforcer, "r0", 100, b)  # no lease yet: it reserves; a lease is asked for
            await _settled(book)
            before = await _script_calls(ledger)
            taken = [book.take(line) for _ in range(int(LEASE_REQUESTS * 0.7))]
            calls = await _script_calls(ledger) - before
            return first, taken, calls, (await ledger.peek([b])).states[0]
        finally:
            await ledger.close()

    first, taken, calls, state = run(body())
    assert first is False
    assert all(t is not None and t[0].lease == "test:lease:1" for t in taken)
    assert calls == 0  # 22 requests admitted, no script run for them
    assert state.reserved == 100 + LEASE_REQUESTS * 100  # the lease is held in the ledger like any reservation


def test_a_lease_past_its_period_gives_back_what_it_did_not_admit(redis_url):
    b, clock = budget(limit=1_000_000), Clock()

    async def body():
        ledger, enforcer, book = _book(redis_url, clock)
        try:
            await _admit(book, enforcer, "r0", 100, b)
            await _settled(book)
            assert book.take([BudgetLine(b, 100)]) is not None
            clock.now += LEASE_PERIOD_S
            book.sweep()
            await _settled(book)
            return book.leases, (await ledger.peek([b])).states[0]
        finally:
            await ledger.close()

    leases, state = run(body())
    # what stays held: the request that reserved on its own, and the share of the one admitted from the lease
    assert leases == {} and state.reserved == 200


def test_near_the_limit_leases_shrink_then_stop_and_requests_reserve_on_their_own(redis_url):
    b, clock = budget(limit=20_000), Clock()

    async def body():
        ledger, enforcer, book = _book(redis_url, clock)
        try:
            grants = []
            for i in range(100):  # 25,000 tokens asked of a 20,000 budget
                await _admit(book, enforcer, f"own-{i}", 250, b)
                await _settled(book)
                lease = book.leases.get(b)
                if lease is not None and (not grants or grants[-1] != lease.granted):
                    grants.append(lease.granted)
            return grants, book.leases.get(b), (await ledger.peek([b])).states[0]
        finally:
            await ledger.close()

    grants, lease, state = run(body())
    # an eighth of what was free once the first request had reserved on its own
    assert grants == sorted(grants, reverse=True) and grants[0] == (20_000 - 250) // 8
    assert state.reserved <= state.limit  # leases included, the ledger never holds more than the limit
    assert lease is None or lease.left < 250  # at the end no lease admits: every request asks the ledger


def test_a_budget_too_small_for_a_lease_worth_holding_never_asks_for_one(redis_url):
    """An eighth of what is free must hold at least four such requests: 1,500 tokens and requests of 150 do not."""
    b, clock = budget(limit=1500), Clock()

    async def body():
        ledger, enforcer, book = _book(redis_url, clock)
        try:
            await ledger.peek([b])  # Redis has the script (its first call here costs a NOSCRIPT and a load)
            before = await _script_calls(ledger)
            leased = [await _admit(book, enforcer, f"r{i}", 150, b) for i in range(5)]
            await _settled(book)
            return leased, await _script_calls(ledger) - before
        finally:
            await ledger.close()

    leased, calls = run(body())
    assert leased == [False] * 5 and calls == 5  # each request's own reservation, nothing else


def test_no_lease_is_used_while_the_ledger_is_unreachable(redis_server):
    b, clock = budget(limit=1_000_000), Clock()

    async def body():
        ledger, enforcer, book = _book(redis_server.url, clock)
        try:
            await _admit(book, enforcer, "r0", 100, b)
            await _settled(book)
            redis_server.stop()
            check = await enforcer.reserve("during", [BudgetLine(b, 100)])  # trips the breaker
            return check.outcome, book.take([BudgetLine(b, 100)])
        finally:
            await ledger.close()

    outcome, taken = run(body())
    assert outcome == "unenforced" and taken is None  # the failure policy applies, as for every request


def test_leases_are_off_when_the_reservation_ttl_is_too_short_to_give_them_back_in_time(redis_url):
    async def body():
        ledger, _, book = _book(redis_url, Clock(), ttl_s=2.0)
        await ledger.close()
        return book.enabled

    assert run(body()) is False


# -- two routers: lease-admitted requests settle anywhere, exactly once -----------------------------------------------

@pytest.fixture
def lease_pair(config_dir, redis_url, monkeypatch):
    (config_dir / "budgets.yaml").write_text(BUDGET)
    monkeypatch.setenv("SWITCHPOINT_SETTLE_KEY", KEY)
    with ThreadedRouter(config_paths=[config_dir], redis_url=redis_url, peer_channel=None) as a, \
            ThreadedRouter(config_paths=[config_dir], redis_url=redis_url, peer_channel=None) as b:
        yield a, b


def _standing(r: ThreadedRouter, tenant: str) -> tuple[float, float]:
    s = r.stub.BudgetStatus(router_pb2.BudgetStatusRequest(tenant=tenant), timeout=10)
    return next((b.spent, b.reserved) for b in s.budgets if b.budget == f"default/per-tenant/{tenant}")


def test_lease_admitted_requests_settle_on_either_replica_once_and_the_lease_goes_back(lease_pair):
    a, b = lease_pair
    first = a.stub.Route(chat("hello there", tenant="t-lease", max_tokens=50), timeout=10)
    assert wait_for(lambda: a.server.core.budgets.leases.leases, timeout=5)  # the lease it asked for landed
    decisions = [a.stub.Route(chat("hello there", tenant="t-lease", max_tokens=50), timeout=10) for _ in range(6)]
    leased = [ln for ln in a.server.core.budgets.leases.leases.values()]
    assert len(leased) == 1 and leased[0].taken == sum(d.budget.budgets[0].request for d in decisions)
    for i, d in enumerate([first, *decisions]):
        settling = (a if i % 2 else b).stub
        report = router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                          prompt_tokens=7, completion_tokens=30, ticket=d.ticket)
        assert not settling.Report(report, timeout=10).duplicate
        assert settling.Report(report, timeout=10).duplicate  # a retried Report counts nothing more
    # every request charged its actual usage once; the lease's unused part goes back within its period
    assert wait_for(lambda: _standing(b, "t-lease") == (7 * 37, 0), timeout=LEASE_PERIOD_S + 5)
