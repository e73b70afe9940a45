"""Killing a router loses nothing: `kill -9` one of two router processes mid-load and count the reservations.

Two `switchpoint router` processes share one real Redis and one settle key, with a short in-flight TTL: 3 s, so
reservations expire after 6 s and the routers reserve every request on its own (a lease needs >= 10 s); or 5 s, so
they expire after 10 s and most requests are admitted from the routers' budget leases. Frontends alternate their
Routes between the two and hold each request open a little before Reporting to the other router; a few requests
routed by the victim are never reported (their frontend "died" with it). Mid-load, router A gets SIGKILL. Then:

* every request A routed that was still open when it died is settled by its Report on B (with the ticket);
* once the Reports are in, the only reservations held are those never reported, to the unit;
* after their TTL, none is held, and each was charged in full once: spend = reported usage + their amounts
  (with leases, + what was left of the lease A held when it died: up to LEASE_REQUESTS requests' worth, charged when
  it expires, as a reservation never reported is).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import grpc
import pytest

from switchpoint.localproc import RouterProcess
from switchpoint.router.budget.lease import LEASE_PERIOD_S, LEASE_REQUESTS, leases_allowed
from switchpoint.router.server import reservation_ttl_s as reservation_ttl_of
from switchpoint.router.tickets import TicketSigner
from switchpoint.v1 import router_pb2, router_pb2_grpc
from tests.conftest import PATIENT_REDIS

BUDGET = """
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: acme}
spec:
  scope: {type: Tenant, name: acme}
  window: {duration: 1h}
  limit: {tokens: 1000000000}
"""
SETTLE_KEY = "the-kill-test-settle-key-0123"
MAX_RESERVATION = 100  # tokens: a short prompt's estimate + max_tokens <= 60


@dataclass
class Tally:
    reported: int = 0  # tokens Reported and settled
    unreported: int = 0  # tokens reserved by requests never Reported
    lost_routes: int = 0  # Routes to A cut off by its death (A may have reserved for them)
    open_at_kill: int = 0  # requests routed by A, not yet Reported when A died
    open_on_a: int = 0  # requests routed by A and not yet Reported, right now
    settled_after_kill: int = 0  # of those, settled by their Report on B
    routed: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    leased: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})  # of those, admitted from a lease
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def frontend(stubs: dict[str, router_pb2_grpc.RouterStub], alive: dict[str, bool], killed: threading.Event,
             stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    signer = TicketSigner(SETTLE_KEY.encode())
    i = 0
    while not stop.is_set():
        i += 1
        name = "a" if i % 2 == 0 and alive["a"] else "b"
        request = router_pb2.RouteRequest(model="auto", tenant="acme", max_tokens=rng.randint(10, 60), messages=[
            router_pb2.ChatMessage(role="user", content=f"question {seed}-{i}")])
        try:
            d = stubs[name].Route(request, timeout=5)
        except grpc.RpcError as exc:
            if name == "a" and killed.is_set():  # A is gone: the next request goes to B
                with tally.lock:
                    tally.lost_routes += 1  # A may have reserved before it died, and the answer never came
                continue
            tally.errors.append(f"Route on {name}: {exc.code()} {exc.details()}")
            return
        ticket = signer.open(d.ticket, d.request_id).budget
        with tally.lock:
            tally.routed[name] += 1
            tally.leased[name] += ticket is not None and bool(ticket.lines[0][3])
        reserved = int(d.budget.budgets[0].request)
        if name == "a" and rng.random() < 0.1:  # this frontend never reports (it died with the router)
            with tally.lock:
                tally.unreported += reserved
            continue
        if name == "a":
            with tally.lock:
                tally.open_on_a += 1
        was_alive = not killed.is_set()
        time.sleep(rng.uniform(0.01, 0.06))  # the model server works
        used = rng.randint(5, reserved)
        other = "b" if name == "a" or not alive["a"] else "a"
        report = router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                          prompt_tokens=used // 2, completion_tokens=used - used // 2, ticket=d.ticket)
        retried = False
        try:
            done = stubs[other].Report(report, timeout=5)
        except grpc.RpcError as exc:
            if other != "a" or not killed.is_set():
                tally.errors.append(f"Report on {other}: {exc.code()} {exc.details()}")
                return
            done, retried = stubs["b"].Report(report, timeout=5), True  # A died first: the same Report to B
        with tally.lock:
            if name == "a":
                tally.open_on_a -= 1
            if done.duplicate and not retried:  # (a retried one may have settled on A just before it died)
                tally.errors.append(f"{d.request_id}: settled twice")
            tally.reported += used
            if name == "a" and was_alive and killed.is_set():
                tally.open_at_kill += 1
                tally.settled_after_kill += not done.duplicate


def standing(stub: router_pb2_grpc.RouterStub) -> tuple[float, float]:
    s = stub.BudgetStatus(router_pb2.BudgetStatusRequest(), timeout=10)
    return next((b.spent, b.reserved) for b in s.budgets if b.budget == "default/acme")


@pytest.fixture
def kill_config(config_dir):
    (config_dir / "budgets.yaml").write_text(BUDGET)
    return config_dir


@pytest.mark.parametrize("ttl_s", [3.0, 5.0], ids=["reservations", "leases"])
def test_killing_a_router_mid_load_loses_no_reservation(kill_config, redis_server, monkeypatch, ttl_s):
    reservation_ttl_s = reservation_ttl_of(ttl_s)
    leases = leases_allowed(reservation_ttl_s)
    monkeypatch.setenv("SWITCHPOINT_SETTLE_KEY", SETTLE_KEY)
    monkeypatch.setenv("SWITCHPOINT_INFLIGHT_TTL_S", str(ttl_s))
    tally = Tally()
    extra = ["--redis", redis_server.url, "--peer-channel", "", *PATIENT_REDIS]
    with RouterProcess([kill_config], metrics=False, extra=extra) as a, \
            RouterProcess([kill_config], metrics=False, extra=extra) as b:
        channels = {"a": grpc.insecure_channel(a.address), "b": grpc.insecure_channel(b.address)}
        stubs = {k: router_pb2_grpc.RouterStub(c) for k, c in channels.items()}
        alive, killed, stop = {"a": True, "b": True}, threading.Event(), threading.Event()
        threads = [threading.Thread(target=frontend, args=(stubs, alive, killed, stop, tally, i)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        # kill A mid-load, while some of its requests are open (their frontends are between Route and Report)
        while (tally.routed["a"] < 40 or tally.open_on_a < 2) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert a.proc is not None
        killed.set()
        a.proc.kill()  # kill -9, mid-load
        alive["a"] = False
        a.proc.wait(10)
        time.sleep(1.0)  # load goes on, on B alone
        stop.set()
        for t in threads:
            t.join(30)
        last_route = time.monotonic()
        assert not tally.errors, tally.errors[:3]
        assert tally.routed["a"] >= 40 and tally.routed["b"] > 0
        assert tally.open_at_kill > 0, "no request of the killed router was open when it died: the test proves nothing"
        assert tally.settled_after_kill == tally.open_at_kill
        assert tally.unreported > 0
        # leases or none, as the TTL says (a lease's grant is 1/8 of what is free and the limit is large: A's Routes
        # after the first few of each period come from leases)
        assert (tally.leased["a"] > tally.routed["a"] // 2) if leases else (tally.leased == {"a": 0, "b": 0})
        if leases:
            time.sleep(LEASE_PERIOD_S + 0.5)  # B gives its own last lease's unused part back
        # every Report settled; what else is held (or, past its TTL, charged) is the never-reported requests'
        # reservations, those of Routes A made but could not answer (at most MAX_RESERVATION each), and with
        # leases what was left of the lease A held (at most LEASE_REQUESTS requests' worth)
        counted = tally.reported + tally.unreported
        spent, held = standing(stubs["b"])
        slack = tally.lost_routes * MAX_RESERVATION + (LEASE_REQUESTS * MAX_RESERVATION if leases else 0)
        assert counted <= spent + held <= counted + slack
        time.sleep(max(0.0, last_route + reservation_ttl_s + 0.5 - time.monotonic()))
        after, reserved = standing(stubs["b"])
        assert reserved == 0, "a reservation was held past its TTL"
        assert after == spent + held  # each held reservation charged once, in full
        for c in channels.values():
            c.close()
