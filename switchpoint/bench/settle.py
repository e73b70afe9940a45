"""The settle-anywhere section of `switchpoint bench budgets`: what a ticket costs, against the alternative.

Two designs let any router replica settle any request (router/handoff.py): a signed ticket in the Decision
(chosen), or the in-flight record kept in Redis. Both need one Redis round trip per Report for exactly-once
(the settle-once mark, or taking the record); the record design also pays one more round trip on every Route
(writing it), the ticket design an HMAC. Measured in the same run, on this machine:

* in process: signing and opening a ticket of a request with two budgets (what Route and Report add);
* from an asyncio loop with the router's own client (router/redisconn.py): PING, the SET of a record of the
  ticket's size (what the record design adds to each Route), and the settle-once pipeline (SET NX + GETDEL,
  what a Report without budgets adds; a budgeted one takes its mark inside the ledger's settle script);
* end to end, two budgeted router processes on one Redis and one settle key: a Report sent to the router that
  routed the request against one sent to the other (rebuilding the entry from the ticket).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import grpc

from switchpoint.bench.router import percentile
from switchpoint.router import redisconn
from switchpoint.router.tickets import Ticket, TicketBudget, TicketSigner
from switchpoint.v1 import router_pb2, router_pb2_grpc

SAMPLE = Ticket(request_id="3f1c2a9e-5b7d-4c1e-9a0b-7e6d5c4b3a21", expires_ms=int(time.time() * 1000) + 600_000,
                policy="default/assistant", decision="general", pool="small-chat",
                model="meta-llama/Llama-3.1-8B-Instruct", replica="10.0.3.17:8000", workload="chat/single/decode/cold",
                pricing=(0.2, 0.6, "USD"),
                budget=TicketBudget("a1b2c3d4e5f6:3f1c2a9e-5b7d-4c1e-9a0b-7e6d5c4b3a21", "admitted",
                                    (("default/bench-tenant-tokens", "", 612, "a1b2c3d4e5f6:lease:41"),
                                     ("default/every-tenant-spend", "bench", 196_000, "a1b2c3d4e5f6:lease:42"))))


def _p50_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def ticket_costs(n: int = 5000) -> dict[str, float]:
    signer = TicketSigner(os.urandom(32))
    token = signer.sign(SAMPLE)
    return {"ticket_bytes": len(token), "sign_us": round(_p50_us(lambda: signer.sign(SAMPLE), n), 2),
            "open_us": round(_p50_us(lambda: signer.open(token, SAMPLE.request_id), n), 2)}


async def _redis_costs(url: str, payload: bytes, n: int) -> dict[str, float]:
    client = redisconn.async_client(url, timeout_s=0.25, max_connections=8)

    async def timed(op) -> float:  # type: ignore[no-untyped-def]
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            await op(i)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e6

    async def mark(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.set(f"sp:bench:settled:{i}", 1, nx=True, px=60_000)
        pipe.getdel(f"sp:bench:handoff:{i}")
        await pipe.execute()

    try:
        await client.ping()
        out = {"ping_us": await timed(lambda i: client.ping()),
               "record_set_us": await timed(lambda i: client.set(f"sp:bench:record:{i}", payload, px=60_000)),
               "mark_us": await timed(mark)}
    finally:
        await redisconn.close(client)
    return {k: round(v, 1) for k, v in out.items()}


def redis_costs(url: str, n: int = 1000) -> dict[str, float]:
    payload = TicketSigner(os.urandom(32)).sign(SAMPLE).encode()
    return asyncio.run(_redis_costs(url, payload, n))


def report_latency(routing: str, other: str, calls: int) -> dict[str, float]:
    """Route on `routing`, then Report to it (here) or to `other` (elsewhere), alternating; Report p50/p99 in ms."""
    request = router_pb2.RouteRequest(model="auto", tenant="bench", max_tokens=200,
                                      messages=[router_pb2.ChatMessage(role="user", content="What is a hash tag?")])
    times: dict[str, list[float]] = {"here": [], "elsewhere": []}
    with grpc.insecure_channel(routing) as a, grpc.insecure_channel(other) as b:
        route, stubs = router_pb2_grpc.RouterStub(a), {"here": router_pb2_grpc.RouterStub(a),
                                                     "elsewhere": router_pb2_grpc.RouterStub(b)}
        for i in range(calls * 2):
            where = "here" if i % 2 == 0 else "elsewhere"
            d = route.Route(request, timeout=10)
            report = router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                              prompt_tokens=50, completion_tokens=100, ticket=d.ticket)
            t0 = time.perf_counter()
            done = stubs[where].Report(report, timeout=10)
            times[where].append(time.perf_counter() - t0)
            if done.duplicate:
                raise RuntimeError(f"{d.request_id} was settled twice")
    out = {}
    for where, sample in times.items():
        out[f"report_{where}_p50_ms"] = round(statistics.median(sample) * 1e3, 4)
        out[f"report_{where}_p99_ms"] = round(percentile(sample, 0.99) * 1e3, 4)
    return out


def print_table(s: dict[str, float]) -> None:
    print("\nsettle anywhere (ticket in the Decision; settle-once mark in Redis)")
    print(f"  ticket: {s['ticket_bytes']:.0f} bytes (two budgets); sign {s['sign_us']:.1f} us, "
          f"open {s['open_us']:.1f} us (p50, in process)")
    print(f"  Redis from the router's client (p50): PING {s['ping_us']:.0f} us; SET of a ticket-sized in-flight "
          f"record {s['record_set_us']:.0f} us; settle-once mark (SET NX + GETDEL) {s['mark_us']:.0f} us")
    print(f"  per Route: ticket {s['sign_us']:.1f} us against {s['record_set_us']:.0f} us for the record in Redis; "
          f"per Report: a budgeted request's mark rides in the ledger's settle call (no extra round trip), any "
          f"other request's costs {s['mark_us']:.0f} us (the record design: a GETDEL, about as much)")
    print(f"  {'':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for where, label in (("here", "Report to the routing router"), ("elsewhere", "Report to the other router")):
        print(f"  {label:<34}{s[f'report_{where}_p50_ms']:>9.3f}{s[f'report_{where}_p99_ms']:>9.3f}")
