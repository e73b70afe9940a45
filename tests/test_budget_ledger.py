"""The Redis ledger (ledger.lua) against a real Redis 8: atomic reserve, settle, expiry, windows."""

from __future__ import annotations

import asyncio
import time

import pytest

from switchpoint.config.model import Budget
from switchpoint.router.budget.enforcer import BudgetEnforcer, BudgetLine
from switchpoint.router.budget.ledger import ADMITTED, DOWNGRADE, DUPLICATE, REJECTED, RedisLedger
from switchpoint.router.budget.scope import BudgetInstance


def budget(name: str = "b", limit: int = 100, action: str = "Reject", reset: str = "Rolling",
           window_s: int = 3600, failure: str = "Open") -> BudgetInstance:
    return BudgetInstance(Budget("ns", name, "Tenant", "t", "x-team", None, window_s, reset, limit, "total", None,
                                 action, "cheap" if action == "Downgrade" else None, failure))


def run(coro):
    return asyncio.run(coro)


async def _with_ledger(url: str, body, timeout_s: float = 0.25):
    ledger = RedisLedger(url, timeout_s)
    try:
        return await body(ledger)
    finally:
        await ledger.close()


def test_reservations_admit_up_to_the_limit_and_no_further(redis_url):
    b = budget(limit=100)

    async def body(ledger: RedisLedger):
        replies = [await ledger.reserve(f"r{i}", 60_000, [(b, 30)], False) for i in range(4)]
        return replies

    replies = run(_with_ledger(redis_url, body))
    assert [r.status for r in replies] == [ADMITTED, ADMITTED, ADMITTED, REJECTED]
    assert replies[2].states[0].reserved == 90 and replies[3].states[0].exhausted
    assert replies[3].culprit == 0
    assert replies[3].states[0].free_at_ms == 0  # nothing spent yet: it frees up only as reservations settle


def test_settle_releases_the_reservation_and_records_actual_usage_once(redis_url):
    b = budget(limit=100)

    async def body(ledger: RedisLedger):
        await ledger.reserve("r1", 60_000, [(b, 50)], False)
        first = await ledger.settle("r1", 60_000, [(b, 20)])
        again = await ledger.settle("r1", 60_000, [(b, 20)])  # a retried Report
        retry = await ledger.reserve("r2", 60_000, [(b, 10)], False)
        retry2 = await ledger.reserve("r2", 60_000, [(b, 10)], False)  # a retried reserve
        return first, again, retry, retry2

    first, again, retry, retry2 = run(_with_ledger(redis_url, body))
    assert (first.states[0].spent, first.states[0].reserved) == (20, 0)
    assert (again.states[0].spent, again.states[0].reserved) == (20, 0)
    assert retry.states[0].reserved == 10 and retry2.states[0].reserved == 10


def test_a_reservation_never_settled_is_charged_in_full_when_it_expires(redis_url):
    b = budget(limit=100)

    async def body(ledger: RedisLedger):
        await ledger.reserve("lost", 50, [(b, 40)], False)
        await asyncio.sleep(0.1)
        return await ledger.peek([b])

    reply = run(_with_ledger(redis_url, body))
    assert (reply.states[0].spent, reply.states[0].reserved) == (40, 0)


def test_rolling_windows_say_when_old_spend_leaves_them(redis_url):
    b = budget(limit=100, window_s=60)

    async def body(ledger: RedisLedger):
        await ledger.reserve("a", 60_000, [(b, 80)], False)
        await ledger.settle("a", 60_000, [(b, 80)])
        return await ledger.reserve("b", 60_000, [(b, 30)], False)

    reply = run(_with_ledger(redis_url, body))
    state = reply.states[0]
    now_ms = time.time() * 1000
    assert reply.status == REJECTED and state.spent == 80
    assert now_ms + 58_000 < state.free_at_ms <= now_ms + 61_000  # the 1 s slice of the spend leaves after ~60 s


def test_calendar_windows_reset_at_the_window_boundary(redis_url):
    b = budget(limit=100, window_s=3600, reset="Calendar")

    async def body(ledger: RedisLedger):
        await ledger.reserve("a", 60_000, [(b, 100)], False)
        await ledger.settle("a", 60_000, [(b, 100)])
        return await ledger.reserve("b", 60_000, [(b, 1)], False)

    state = run(_with_ledger(redis_url, body)).states[0]
    hour_ms = 3_600_000
    expected_end = (int(time.time() * 1000) // hour_ms + 1) * hour_ms
    assert state.window_end_ms == expected_end and state.free_at_ms == expected_end


def test_the_strictest_budget_wins_and_nothing_is_reserved_on_refusal(redis_url):
    soft = budget("soft", limit=10, action="Downgrade")
    hard = budget("hard", limit=1000, action="Reject")
    observe = budget("watch", limit=5, action="Observe")

    async def body(ledger: RedisLedger):
        down = await ledger.reserve("r", 60_000, [(observe, 50), (soft, 50), (hard, 50)], False)
        forced = await ledger.reserve("r", 60_000, [(observe, 20), (soft, 20), (hard, 20)], True)
        return down, forced

    down, forced = run(_with_ledger(redis_url, body))
    assert down.status == DOWNGRADE and down.culprit == 1
    assert [s.reserved for s in down.states] == [0, 0, 0]
    assert forced.status == ADMITTED and [s.reserved for s in forced.states] == [20, 20, 20]
    assert forced.states[0].exhausted and forced.states[1].exhausted and not forced.states[2].exhausted


def test_concurrent_reservations_never_oversubscribe(redis_url):
    b = budget(limit=1000)

    async def body(ledger: RedisLedger):
        replies = await asyncio.gather(*(ledger.reserve(f"r{i}", 60_000, [(b, 7)], False) for i in range(300)))
        return replies, await ledger.peek([b])

    # atomicity, not speed: 300 calls queue for 64 connections, which on a loaded machine takes longer than the
    # router's 0.25 s call timeout
    replies, peek = run(_with_ledger(redis_url, body, timeout_s=10.0))
    admitted = sum(r.status == ADMITTED for r in replies)
    assert admitted == 1000 // 7 and peek.states[0].reserved == admitted * 7


@pytest.mark.parametrize("reset", ["Rolling", "Calendar"])
def test_peek_changes_nothing(redis_url, reset):
    b = budget(limit=10, reset=reset)

    async def body(ledger: RedisLedger):
        await ledger.peek([b])
        return await ledger.client.keys("sp:budget:*")

    assert run(_with_ledger(redis_url, body)) == []


def test_a_reserve_whose_reply_was_lost_is_released_when_the_ledger_answers_again(redis_server):
    """Redis ran the reserve script, then died before the reply arrived: the router admitted the request
    unenforced, so the orphaned reservation must not stay held (it would refuse others until it expired)."""
    b = budget(limit=100)

    async def body():
        ledger = RedisLedger(redis_server.url)
        enforcer = BudgetEnforcer(ledger, reservation_ttl_s=600, breaker_s=0)
        try:
            await ledger.reserve("lost-reply", 600_000, [(b, 60)], False)  # what Redis executed
            redis_server.stop()
            check = await enforcer.reserve("lost-reply", [BudgetLine(b, 60)])  # what the router saw
            redis_server.start()
            flushed = await enforcer.flush_pending()
            return check, flushed, await ledger.peek([b])
        finally:
            await ledger.close()

    check, flushed, after = run(body())
    assert check.outcome == "unenforced" and flushed == 1
    assert (after.states[0].spent, after.states[0].reserved) == (0, 0)


# -- leases (router/budget/lease.py): one reservation a router admits many requests from -----------------------------

def test_a_lease_takes_what_was_asked_or_an_eighth_of_what_is_free_and_a_retried_grant_takes_nothing_more(redis_url):
    b = budget(limit=8000)

    async def body(ledger: RedisLedger):
        first = await ledger.grant("L1", 60_000, b, 500)
        again = await ledger.grant("L1", 60_000, b, 500)  # the client's retry of a dropped call
        capped = await ledger.grant("L2", 60_000, b, 5000)  # (8000 - 500) / 8
        small = await ledger.grant("L3", 60_000, b, 5000, least=1000)  # an eighth of the rest is less: none
        return first, again, capped, small

    first, again, capped, small = run(_with_ledger(redis_url, body))
    assert (first.granted, first.states[0].reserved) == ((500,), 500)
    assert (again.granted, again.states[0].reserved) == ((500,), 500)
    assert (capped.granted, capped.states[0].reserved) == ((937,), 1437)
    assert (small.granted, small.states[0].reserved) == ((0,), 1437)


def test_requests_admitted_from_a_lease_settle_their_share_and_its_release_gives_back_only_the_rest(redis_url):
    """Three requests of 100 take their shares of a 1000 lease; one settles before the router gives the unused
    700 back, one after; the third never reports and is charged in full when what the lease still holds expires."""
    b = budget(limit=100_000)

    async def body(ledger: RedisLedger):
        await ledger.grant("L", 300, b, 1000)
        early = await ledger.settle("r1", 300, [(b, 80)], once=True, via=[("L", 100)])
        released = await ledger.release("L", 300, b, 700)
        again = await ledger.release("L", 300, b, 700)  # a retried release gives back nothing more
        late = await ledger.settle("r2", 300, [(b, 130)], once=True, via=[("L", 100)])
        twice = await ledger.settle("r2", 300, [(b, 130)], once=True, via=[("L", 100)])
        await asyncio.sleep(0.4)  # r3 never reports: the lease's hold expires
        return early, released, again, late, twice, await ledger.peek([b])

    early, released, again, late, twice, expired = run(_with_ledger(redis_url, body))
    state = lambda reply: (reply.states[0].spent, reply.states[0].reserved)  # noqa: E731
    assert state(early) == (80, 900)
    assert state(released) == (80, 200) and state(again) == (80, 200)
    assert state(late) == (210, 100) and twice.status == DUPLICATE
    assert state(expired) == (310, 0)


def test_a_settle_whose_lease_already_expired_counts_nothing_more(redis_url):
    """The router died holding the lease: it was charged in full when it expired, the request's share with it."""
    b = budget(limit=100_000)

    async def body(ledger: RedisLedger):
        await ledger.grant("L", 50, b, 400)
        await asyncio.sleep(0.1)
        await ledger.peek([b])  # the expiry is charged by the next call
        return await ledger.settle("r", 50, [(b, 90)], once=True, via=[("L", 100)])

    after = run(_with_ledger(redis_url, body))
    assert (after.states[0].spent, after.states[0].reserved) == (400, 0)


def test_no_lease_is_granted_from_a_spent_budget(redis_url):
    b = budget(limit=100)

    async def body(ledger: RedisLedger):
        await ledger.reserve("r", 60_000, [(b, 95)], False)
        return await ledger.grant("L", 60_000, b, 3200)

    reply = run(_with_ledger(redis_url, body))
    assert reply.granted == (0,) and reply.states[0].reserved == 95
