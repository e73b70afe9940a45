"""`switchpoint bench budgets`: what two budgets add to Route, and the overspend under concurrent load.

Two router processes run side by side on 127.0.0.1 with the example pools and policy: one
with two budgets that apply to every benchmark request (a Tenant token budget and an
EachTenant money budget: admitted from the router's leases, or reserved in one atomic Redis call),
one without budgets, the baseline. Latency: sequential Route calls, each followed by its Report (not
timed), so reservations are settled as in production, the two routers taking turns call by call: on
this shared machine the speed of everything drifts by tens of percent within minutes, and blocks of
calls measured one router after the other compared the moments as much as the routers.
Overspend: 16 concurrent frontends drive a small token budget past its limit, each
reporting actual usage that differs a little from the router's estimate (as a model
server's tokenizer would); the ledger's final spend is compared with the limit and with
the stated bound (sum of usage beyond reservation, see router/budget/enforcer.py).
Settle anywhere: a second budgeted router on the same Redis and settle key, and what tickets
cost against keeping the in-flight record in Redis (switchpoint/bench/settle.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from switchpoint.bench import settle
from switchpoint.bench.router import percentile
from switchpoint.demo import SAMPLES
from switchpoint.localproc import RouterProcess
from switchpoint.localredis import RedisServer
from switchpoint.v1 import router_pb2, router_pb2_grpc

HOT_LIMIT_TOKENS = 20_000
BUDGETS = f"""
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {{name: bench-tenant-tokens}}
spec:
  scope: {{type: Tenant, name: bench}}
  window: {{duration: 1d}}
  limit: {{tokens: 1000000000000}}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {{name: every-tenant-spend}}
spec:
  scope: {{type: EachTenant}}
  window: {{duration: 30d, reset: Calendar}}
  limit: {{amount: 1000000}}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {{name: hot-tokens}}
spec:
  scope: {{type: Tenant, name: hot}}
  window: {{duration: 1h}}
  limit: {{tokens: {HOT_LIMIT_TOKENS}}}
"""
ROUNDS = 2  # each router gets ROUNDS x --calls Routes


def _requests(tenant: str) -> list[router_pb2.RouteRequest]:
    return [router_pb2.RouteRequest(messages=[router_pb2.ChatMessage(role="user", content=prompt)],
                                    **{"model": "auto", **extra, "tenant": tenant, "max_tokens": 200})
            for prompt, extra in SAMPLES if len(prompt) < 10_000]


def _paired_latency(addresses: list[str], calls: int) -> list[list[float]]:
    """`calls` Routes (each followed by its Report, not timed) on each router, the routers taking turns call by call
    (who goes first rotates), so that all meet the same moments of a shared machine: their Route times."""
    requests = _requests("bench")
    out: list[list[float]] = [[] for _ in addresses]
    with contextlib.ExitStack() as stack:
        stubs = [router_pb2_grpc.RouterStub(stack.enter_context(grpc.insecure_channel(a))) for a in addresses]
        for i in range(calls):
            for j in range(len(stubs)):
                k = (i + j) % len(stubs)
                t0 = time.perf_counter()
                d = stubs[k].Route(requests[i % len(requests)], timeout=10)
                out[k].append(time.perf_counter() - t0)
                stubs[k].Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                         prompt_tokens=50, completion_tokens=100), timeout=10)
    return out


def _overspend(address: str, threads: int = 16) -> dict[str, float]:
    """Drive the `hot` budget past its limit; returns spent, limit and the bound."""
    excess = 0
    lock = threading.Lock()
    requests = _requests("hot")

    def frontend(seed: int) -> None:
        nonlocal excess
        rng = random.Random(seed)
        with grpc.insecure_channel(address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            refusals = 0
            while refusals < 5:
                try:
                    d = stub.Route(requests[rng.randrange(len(requests))], timeout=10)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    refusals += 1
                    continue
                [hot] = [s for s in d.budget.budgets if s.budget.endswith("/hot-tokens")]
                prompt = max(1, int(hot.request) - 200 + rng.randint(-5, 8))
                completion = rng.randint(20, 200)
                stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                     prompt_tokens=prompt, completion_tokens=completion), timeout=10)
                with lock:
                    excess += max(0, prompt + completion - int(hot.request))

    workers = [threading.Thread(target=frontend, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with grpc.insecure_channel(address) as channel:
        status = router_pb2_grpc.RouterStub(channel).BudgetStatus(router_pb2.BudgetStatusRequest(), timeout=10)
    [hot] = [s for s in status.budgets if s.budget.endswith("/hot-tokens")]
    return {"spent": hot.spent, "reserved": hot.reserved, "limit": hot.limit, "bound": float(excess)}


def _configs(source: list[Path], root: Path) -> tuple[Path, Path]:
    plain, budgeted = root / "without-budgets", root / "with-budgets"
    for target in (plain, budgeted):
        target.mkdir()
        for folder in source:
            for f in (folder.glob("*.yaml") if folder.is_dir() else [folder]):
                if "budget" not in f.name:
                    shutil.copy(f, target / f.name)
    (budgeted / "bench-budgets.yaml").write_text(BUDGETS)
    return plain, budgeted


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="switchpoint-bench-") as tmp, contextlib.ExitStack() as stack:
        plain, budgeted = _configs([Path(p) for p in args.config], Path(tmp))
        # Durable as Redis is by default with an append-only file: fsync once a second. `appendfsync always` (the
        # test fixtures' setting, so a restart loses nothing) fsyncs before every reply and measured +0.5-1.5 ms per
        # ledger write on this machine's disk: that is the disk, not what budgets cost the router.
        redis_url = args.redis or stack.enter_context(RedisServer(args=["--appendfsync", "everysec"])).url
        baseline = stack.enter_context(RouterProcess([plain], metrics=False))
        stack.enter_context(_settle_key())
        router = stack.enter_context(RouterProcess([budgeted], metrics=False, extra=["--redis", redis_url]))
        other = stack.enter_context(RouterProcess([budgeted], metrics=False, extra=["--redis", redis_url]))
        # the same budgets, every Route reserving on its own (no leases): what leases save, in the same run
        unleased = stack.enter_context(RouterProcess([budgeted], metrics=False,
                                                     extra=["--redis", redis_url, "--no-budget-leases"]))
        addresses = [baseline.address, router.address, unleased.address]
        _paired_latency(addresses, 100)  # warm up
        plain, leased, reserving = _paired_latency(addresses, ROUNDS * args.calls)
        best = {name: (statistics.median(sample) * 1e3, percentile(sample, 0.99) * 1e3)
                for name, sample in (("baseline", plain), ("budgets", leased), ("unleased", reserving))}
        paired = statistics.median(b - a for a, b in zip(plain, leased, strict=True)) * 1e3
        spend = _overspend(router.address)
        settling = {**settle.ticket_costs(), **settle.redis_costs(redis_url),
                    **settle.report_latency(router.address, other.address, max(50, args.calls // 3))}
    summary = {
        "route_p50_ms": round(best["budgets"][0], 4),
        "route_p99_ms": round(best["budgets"][1], 4),
        "baseline_p50_ms": round(best["baseline"][0], 4),
        "baseline_p99_ms": round(best["baseline"][1], 4),
        "added_p50_ms": round(best["budgets"][0] - best["baseline"][0], 4),
        "added_p99_ms": round(best["budgets"][1] - best["baseline"][1], 4),
        "added_paired_p50_ms": round(paired, 4),
        "unleased_p50_ms": round(best["unleased"][0], 4),
        "unleased_p99_ms": round(best["unleased"][1], 4),
        "unleased_added_p50_ms": round(best["unleased"][0] - best["baseline"][0], 4),
        "overspend_ratio": round(max(0.0, spend["spent"] - spend["limit"]) / spend["limit"], 6),
        "bound_ratio": round(spend["bound"] / spend["limit"], 6),
        "spent_tokens": spend["spent"],
        "limit_tokens": spend["limit"],
        "targets": {"added_p50_ms_max": 1.0, "overspend_within_bound": True},
        "settle": settling,
    }
    summary["targets_met"] = (summary["added_p50_ms"] < 1.0
                              and summary["overspend_ratio"] <= summary["bound_ratio"])
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{'':<34}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'Route, no budgets (baseline)':<34}{summary['baseline_p50_ms']:>9.3f}{summary['baseline_p99_ms']:>9.3f}")
    print(f"{'Route, two budgets (leases)':<34}{summary['route_p50_ms']:>9.3f}{summary['route_p99_ms']:>9.3f}")
    print(f"{'added':<34}{summary['added_p50_ms']:>9.3f}{summary['added_p99_ms']:>9.3f}")
    print(f"{'added, median of paired calls':<34}{summary['added_paired_p50_ms']:>9.3f}")
    print(f"{'Route, two budgets, no leases':<34}{summary['unleased_p50_ms']:>9.3f}{summary['unleased_p99_ms']:>9.3f}")
    print(f"{'added without leases':<34}{summary['unleased_added_p50_ms']:>9.3f}")
    print(f"\noverspend under 16 concurrent frontends: spent {spend['spent']:,.0f} of {spend['limit']:,.0f} tokens "
          f"-> overspend ratio {summary['overspend_ratio']:.4f}; stated bound {summary['bound_ratio']:.4f}")
    print(f"targets: added p50 < 1 ms, overspend within the bound -> {'met' if summary['targets_met'] else 'NOT met'}"
          f"  ({ROUNDS * args.calls} sequential calls on each router, taking turns)")
    settle.print_table(settling)
    return 0


@contextlib.contextmanager
def _settle_key():  # type: ignore[no-untyped-def]
    """The budgeted routers share a settle key (as the chart's Secret gives it), so either settles any Report."""
    before = os.environ.get("SWITCHPOINT_SETTLE_KEY")
    os.environ["SWITCHPOINT_SETTLE_KEY"] = os.urandom(16).hex()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SWITCHPOINT_SETTLE_KEY", None)
        else:
            os.environ["SWITCHPOINT_SETTLE_KEY"] = before
