"""The proof: several router processes, one Redis, many tenants at once, budgets nearly spent.

Bound asserted (see router/budget/enforcer.py): admission keeps spend + reservations within
the limit, so for every budget

    spent <= limit + sum over admitted requests of max(0, actual - reserved)

where `reserved` is the amount the Decision says was reserved for the request and `actual`
what its Report said it used. And nothing admitted with a reservation is lost: the ledger's
spend equals the sum of the reported usage of those requests.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from switchpoint.localproc import RouterProcess
from switchpoint.localredis import RedisClusterServer, RedisServer
from switchpoint.v1 import router_pb2, router_pb2_grpc
from tests.conftest import PATIENT_REDIS

TENANTS = [f"tenant-{i}" for i in range(8)]
BUDGETS = """
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: per-tenant}
spec:
  scope: {type: EachTenant}
  window: {duration: 1h}
  limit: {tokens: 1500}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: tenant-0-cap}
spec:
  scope: {type: Tenant, name: tenant-0}
  window: {duration: 1h, reset: Calendar}
  limit: {tokens: 900}
"""


@dataclass
class Books:
    """What the frontends saw: per budget, the reported usage and the excess over the reservation."""

    actual: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    excess: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    admitted: int = 0
    rejected: int = 0
    unenforced: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def frontend(address: str, tenants: list[str], calls: int, books: Books, seed: int, report_to: str = "") -> None:
    try:
        _frontend(address, tenants, calls, books, random.Random(seed), report_to or address)
    except Exception as exc:  # surfaced by the test through books.errors
        books.errors.append(repr(exc))


def _frontend(address: str, tenants: list[str], calls: int, books: Books, rng: random.Random,
              report_to: str) -> None:
    with grpc.insecure_channel(address) as channel, grpc.insecure_channel(report_to) as report_channel:
        stub = router_pb2_grpc.RouterStub(channel)
        reports = router_pb2_grpc.RouterStub(report_channel)
        for _ in range(calls):
            if books.stop.is_set():
                return
            tenant = rng.choice(tenants)
            max_tokens = rng.randint(10, 120)
            text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(3, 40)))
            request = router_pb2.RouteRequest(model="auto", tenant=tenant, max_tokens=max_tokens,
                                              messages=[router_pb2.ChatMessage(role="user", content=text)])
            try:
                d = stub.Route(request, timeout=10)
            except grpc.RpcError as exc:
                with books.lock:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        books.rejected += 1
                    else:
                        books.errors.append(f"{exc.code()}: {exc.details()}")
                continue
            # the model server's own count of the prompt differs a little from the router's estimate
            prompt_tokens = max(1, int(d.budget.budgets[0].request) - max_tokens + rng.randint(-3, 4))
            completion = rng.randint(1, max_tokens)
            reports.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                    prompt_tokens=prompt_tokens, completion_tokens=completion,
                                                    ticket=d.ticket), timeout=10)
            with books.lock:
                if d.budget.outcome == "unenforced":
                    books.unenforced += 1
                    continue
                books.admitted += 1
                for state in d.budget.budgets:
                    used = prompt_tokens + completion
                    books.actual[state.budget] += used
                    books.excess[state.budget] += max(0, used - int(state.request))


def ledger_spend(address: str) -> dict[str, tuple[float, float, float]]:
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        out = {}
        for tenant in TENANTS:
            for s in stub.BudgetStatus(router_pb2.BudgetStatusRequest(tenant=tenant), timeout=10).budgets:
                out[s.budget] = (s.spent, s.reserved, s.limit)
        return out


def run_fleet(config: Path, redis: RedisServer | RedisClusterServer, during: Callable[[Books], None] | None = None,
              report_elsewhere: bool = False) -> tuple[Books, dict]:
    """12 frontends over 3 routers; with `report_elsewhere`, each Reports to the next router (settle anywhere)."""
    books = Books()
    routers = [RouterProcess([config], metrics=False, extra=["--redis", redis.url, *PATIENT_REDIS]) for _ in range(3)]
    for r in routers:
        r.__enter__()
    try:
        calls = 60 if during is None else 100_000  # with `during`, frontends run until it is over
        threads = [threading.Thread(target=frontend, args=(
            routers[i % 3].address, TENANTS, calls, books, i,
            routers[(i + 1) % 3].address if report_elsewhere else "")) for i in range(12)]
        for t in threads:
            t.start()
        if during is not None:
            during(books)
            books.stop.set()
        for t in threads:
            t.join(120)
        # queued settlements (if the ledger was down) are flushed every second by each router
        deadline = time.monotonic() + 15
        while True:
            spend = ledger_spend(routers[0].address)
            if all(reserved == 0 for _, reserved, _ in spend.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return books, spend
    finally:
        for r in routers:
            r.__exit__(None, None, None)


@pytest.fixture
def fleet_config(config_dir: Path) -> Path:
    (config_dir / "budgets.yaml").write_text(BUDGETS)
    return config_dir


def assert_books_balance(books: Books, spend: dict) -> None:
    assert not books.errors, books.errors[:3]
    assert books.rejected > 0, "the budgets were never exhausted: the test proves nothing"
    for budget, (spent, reserved, limit) in spend.items():
        assert reserved == 0, f"{budget}: reservations left unsettled"
        assert spent == books.actual[budget], f"{budget}: ledger {spent} != reported {books.actual[budget]}"
        assert spent <= limit + books.excess[budget], f"{budget}: {spent} over {limit} + {books.excess[budget]}"


def test_budgets_hold_across_router_replicas(fleet_config, redis_server):
    books, spend = run_fleet(fleet_config, redis_server)
    assert books.unenforced == 0 and books.admitted > 50
    assert_books_balance(books, spend)
    assert any(spent > 0.8 * limit for spent, _, limit in spend.values())


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_budgets_survive_a_redis_restart(fleet_config, redis_server):
    def restart(books: Books) -> None:
        wait_until(lambda: books.admitted + books.rejected >= 100)
        redis_server.stop()
        wait_until(lambda: books.unenforced >= 20, timeout=10)
        redis_server.start()
        before = books.admitted + books.rejected
        wait_until(lambda: books.admitted + books.rejected >= before + 200)

    books, spend = run_fleet(fleet_config, redis_server, during=restart)
    assert books.unenforced >= 20, "Redis was never down while requests arrived"
    assert_books_balance(books, spend)


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer(masters=3) as cluster:
        yield cluster


def test_budgets_hold_the_same_bound_on_a_redis_cluster(fleet_config, redis_cluster, monkeypatch):
    """As test_budgets_hold_across_router_replicas, on a three-master cluster, each frontend Reporting to another
    router than the one that routed (settle anywhere)."""
    monkeypatch.setenv("SWITCHPOINT_SETTLE_KEY", "the-fleet-settle-key-0123456789")
    books, spend = run_fleet(fleet_config, redis_cluster, report_elsewhere=True)
    assert books.unenforced == 0 and books.admitted > 50
    assert_books_balance(books, spend)
    assert any(spent > 0.8 * limit for spent, _, limit in spend.values())
