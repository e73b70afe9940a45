"""Prefix blocks still being computed: believed held at once, counted as cached only once computed."""

from __future__ import annotations

import random

import pytest

from switchpoint.config.model import Candidate, Pool, Pricing, Replica, SchedulingConfig
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.backlog import PrefillBacklog
from switchpoint.router.scheduling.peers import PeerCommit
from switchpoint.router.scheduling.prefix import PrefixIndex
from switchpoint.router.scheduling.scheduler import Placement, Scheduler

A, B = "h:1", "h:2"
SYSTEM = "You are a meticulous assistant for the ACME support team. " * 140  # ~2,000 tokens: 0.4 s of prefill


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def computed(index: PrefixIndex, replica: str, blocks: tuple[int, ...], now: float) -> int:
    counts = index.matches(blocks, now)
    if counts is None or replica not in index.table:
        return 0
    return int(counts[index.table.slot_of[replica]])


# (what is recorded: (replica, first blocks, ready_at) in order, when it is asked, blocks computed on A of 1..6)
READY_CASES = [
    ("recorded computed", [(A, 6, None)], 5.0, 6),
    ("still computing", [(A, 6, 10.0)], 5.0, 0),
    ("computed at its time", [(A, 6, 10.0)], 10.0, 6),
    ("a computed prefix, the rest computing", [(A, 3, None), (A, 6, 10.0)], 5.0, 3),
    ("the earlier of two times", [(A, 6, 8.0), (A, 6, 12.0)], 9.0, 6),
    ("a later commit hastens a block", [(A, 6, 12.0), (A, 6, 8.0)], 9.0, 6),
    ("a computed block stays computed", [(A, 6, None), (A, 6, 12.0)], 9.0, 6),
    ("another replica's computing does not count", [(A, 6, None), (B, 6, 12.0)], 9.0, 6),
    ("another replica computing, this one never held it", [(B, 6, 12.0)], 9.0, 0),
]


@pytest.mark.parametrize(("recorded", "now", "expected"), [c[1:] for c in READY_CASES],
                         ids=[c[0] for c in READY_CASES])
def test_matches_by_a_moment_count_the_blocks_computed_by_then(recorded, now, expected):
    index = PrefixIndex()
    blocks = tuple(range(1, 7))
    for replica, first, ready_at in recorded:
        index.record(replica, blocks[:first], ready_at)
    assert index.match(A, blocks) == max((f for r, f, _ in recorded if r == A), default=0)  # believed: all
    assert computed(index, A, blocks, now) == expected
    assert computed(index, A, blocks, now) == expected  # asking again (entries past their time dropped) agrees


def test_without_blocks_computing_both_counts_agree():
    index = PrefixIndex()
    index.record(A, (1, 2, 3))
    index.record(B, (1, 2), 5.0)
    assert index.matches((1, 2, 3), 6.0).tolist() == index.matches((1, 2, 3)).tolist() == [3, 2]
    assert not index._computing  # B's blocks, computed by 6.0, were let go of on the way


def test_evicted_and_forgotten_blocks_leave_no_pending_time():
    index = PrefixIndex(capacity=4)
    index.record(A, (1, 2, 3, 4), 50.0)
    index.record(A, (5, 6), 50.0)  # evicts 1 and 2 from A
    index.record(B, (7, 8), 50.0)
    assert set(index._computing) == {3, 4, 5, 6, 7, 8}
    index.retain({A})
    assert set(index._computing) == {3, 4, 5, 6}
    index.record(A, (9, 10, 11, 12), 50.0)  # evicts all of A's older blocks
    assert set(index._computing) == {9, 10, 11, 12}


def test_times_passed_are_let_go_of_by_recording_alone():
    """A router that only hears its peers' commits never looks a prompt up: recording lets go of the past."""
    index = PrefixIndex()
    for i in range(100):
        index.record(A, (i, i + 1000), ready_at=i + 0.5, now=float(i))
    assert set(index._computing) == {99, 1099} and len(index._due) == 1


def test_backlog_add_tells_when_its_tokens_are_prefilled():
    backlog = PrefillBacklog()
    assert backlog.add(A, 1000, 10.0, 5000) == pytest.approx(10.2)
    assert backlog.add(A, 1000, 10.1, 5000) == pytest.approx(10.4)  # behind the 500 tokens still owed
    assert backlog.add(B, 1000, 10.1, 5000) == pytest.approx(10.3)


def chat(question: str) -> RouteInput:
    turns = (ChatTurn("system", SYSTEM), ChatTurn("user", question))
    return RouteInput(request_id=str(random.random()), model="auto", messages=turns)


def two_replicas(profile: str) -> Candidate:
    p = Pool("default", "a", ("m",), "gpu", 8192, Pricing(), (Replica(A), Replica(B)))
    return Candidate(p, "m", SchedulingConfig(profile=profile))


def follower_during_prefill(profile: str) -> tuple[Scheduler, Clock, Candidate, Placement, Placement]:
    """A request with a long system prompt, then another under the same one 0.1 s later: the first replica is
    still prefilling it."""
    clock = Clock()
    sched = Scheduler(InflightLedger(), clock=clock, rng=random.Random(1))
    c = two_replicas(profile)
    first = sched.place(c, chat("first question"))
    sched.commit(c, first)
    clock.now += 0.1
    return sched, clock, c, first, sched.place(c, chat("second question"))


def test_a_follower_during_the_prefill_is_not_herded_onto_the_replica_computing_its_prefix():
    sched, clock, c, first, follower = follower_during_prefill("switchpoint")
    assert follower.replica != first.replica
    assert follower.uncached_tokens >= first.uncached_tokens - 50  # the whole prompt: nothing computed anywhere
    clock.now += 1.0  # both computed
    later = sched.place(c, chat("third question"))
    assert later.uncached_tokens < 50


def test_gie_default_still_scores_blocks_as_soon_as_they_are_sent():
    """The baseline stays GIE's: its prefix-cache scorer counts a block from the moment of the pick."""
    *_, first, follower = follower_during_prefill("gie-default")
    assert follower.replica == first.replica
    assert follower.uncached_tokens >= first.uncached_tokens - 50  # what that replica will really prefill


def test_a_peers_commit_marks_its_blocks_computing_behind_this_routers_backlog():
    clock = Clock()
    sched = Scheduler(InflightLedger(), clock=clock, name="me")
    c = two_replicas("switchpoint")
    mine = sched.place(c, chat("mine"))
    sched.commit(c, mine)
    address = mine.replica.address
    owed = sched.backlog.tokens(address, clock.now, 5000.0)
    assert owed > 1000  # the system prompt
    blocks = tuple(range(1, 65))
    sched.apply(PeerCommit("peer", address, "", 2000, 5000.0, blocks))
    done = clock.now + (owed + 2000) / 5000.0
    assert sched.prefix.match(address, blocks) == len(blocks)
    assert computed(sched.prefix, address, blocks, done - 0.01) == 0
    assert computed(sched.prefix, address, blocks, done) == len(blocks)
