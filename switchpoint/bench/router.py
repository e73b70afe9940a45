"""`switchpoint bench router`: the Route RPC against a no-op RPC on the same server, in one run.

The router runs as its own process on 127.0.0.1 with the example policy. The
floor is grpc.health.v1.Health/Check on that same server: the cheapest unary
method it serves, so the difference is what routing costs. The client sends
pre-serialised requests and does not decode replies, to keep its own CPU use
(which shares the machine) as small as possible. Each phase runs twice,
alternating floor and Route, and the better round counts, which evens out drift
on a shared machine. Besides latency and throughput it reports the router
process's CPU time per call, which does not depend on how fast the client is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from switchpoint.demo import SAMPLES
from switchpoint.localproc import RouterProcess
from switchpoint.v1 import router_pb2

ROUTE_METHOD = "/switchpoint.v1.Router/Route"
FLOOR_METHOD = "/grpc.health.v1.Health/Check"
ROUNDS = 2


@dataclass
class PhaseResult:
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_us_per_call: float


def route_payloads() -> list[bytes]:
    payloads = []
    for prompt, extra in SAMPLES:
        fields = {"model": "auto", **extra}
        msg = router_pb2.RouteRequest(messages=[router_pb2.ChatMessage(role="user", content=prompt)], **fields)
        payloads.append(msg.SerializeToString())
    return payloads


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latency(channel: grpc.aio.Channel, method: str, payloads: list[bytes], calls: int) -> list[float]:
    call = channel.unary_unary(method)
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        await call(payloads[i % len(payloads)])
        out.append(time.perf_counter() - t0)
    return out


async def _throughput(channel: grpc.aio.Channel, method: str, payloads: list[bytes], concurrency: int,
                      duration: float) -> tuple[int, float]:
    call = channel.unary_unary(method)
    done = 0
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await call(payloads[i % len(payloads)])
            i += 1
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done, time.perf_counter() - t0


async def _measure(router: RouterProcess, args: argparse.Namespace) -> dict[str, PhaseResult]:
    floor_payloads = [health_pb2.HealthCheckRequest().SerializeToString()]
    phases = {"floor": (FLOOR_METHOD, floor_payloads), "route": (ROUTE_METHOD, route_payloads())}
    best: dict[str, PhaseResult] = {}
    async with grpc.aio.insecure_channel(router.address) as channel:
        for method, payloads in phases.values():  # warm up both paths
            await _latency(channel, method, payloads, 200)
        for _ in range(ROUNDS):
            for name, (method, payloads) in phases.items():
                lat = await _latency(channel, method, payloads, args.latency_calls)
                cpu0 = router.cpu_seconds()
                calls, elapsed = await _throughput(channel, method, payloads, args.concurrency, args.duration)
                cpu = router.cpu_seconds() - cpu0
                result = PhaseResult(
                    p50_ms=statistics.median(lat) * 1e3,
                    p99_ms=percentile(lat, 0.99) * 1e3,
                    rps=calls / elapsed,
                    cpu_us_per_call=cpu / calls * 1e6,
                )
                prev = best.get(name)
                best[name] = result if prev is None else PhaseResult(
                    min(prev.p50_ms, result.p50_ms), min(prev.p99_ms, result.p99_ms),
                    max(prev.rps, result.rps), min(prev.cpu_us_per_call, result.cpu_us_per_call))
    return best


def run(args: argparse.Namespace) -> int:
    with RouterProcess([Path(p) for p in args.config], metrics=True) as router:
        results = asyncio.run(_measure(router, args))
    sections = set(args.sections)
    extra: dict[str, dict] = {}
    if "fleet" in sections:
        from switchpoint.bench.fleet_scale import measure_fleet_scale

        extra["fleet_scale"] = measure_fleet_scale(quick=args.quick)  # keys fleet, fleet_ratio_1000_vs_10, ...
    if "prompt-size" in sections:
        from switchpoint.bench.prompt_size import prompt_size

        extra["prompt_size"] = prompt_size(quick=args.quick)
    if "peers" in sections:
        from switchpoint.bench.peer_cost import peer_cost

        extra["peers"] = peer_cost(calls=args.latency_calls // 2, concurrency=args.concurrency,
                                   duration=args.duration)
    floor, route = results["floor"], results["route"]
    summary = {
        "route_p50_ms": round(route.p50_ms, 4),
        "route_p99_ms": round(route.p99_ms, 4),
        "route_rps": round(route.rps, 1),
        "route_cpu_us_per_call": round(route.cpu_us_per_call, 1),
        "floor_p50_ms": round(floor.p50_ms, 4),
        "floor_p99_ms": round(floor.p99_ms, 4),
        "floor_rps": round(floor.rps, 1),
        "floor_cpu_us_per_call": round(floor.cpu_us_per_call, 1),
        "rps_ratio": round(route.rps / floor.rps, 3),
        "p50_ratio": round(route.p50_ms / floor.p50_ms, 3),
        "targets": {"rps_ratio_min": 0.5, "p50_ratio_max": 1.5},
        "concurrency": args.concurrency,
        "duration_s": args.duration,
    }
    summary["targets_met"] = summary["rps_ratio"] >= 0.5 and summary["p50_ratio"] <= 1.5
    summary.update(extra.get("fleet_scale", {}))
    for section in ("prompt_size", "peers"):
        if section in extra:
            summary[section] = extra[section]
    if args.json:
        print(json.dumps(summary))
        return 0
    rows = [("floor: Health/Check", asdict(floor)), ("Route, example policy", asdict(route))]
    print(f"{'':<24}{'p50 ms':>9}{'p99 ms':>9}{'max rps':>10}{'router CPU us/call':>20}")
    for label, r in rows:
        print(f"{label:<24}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['rps']:>10.0f}{r['cpu_us_per_call']:>20.0f}")
    print(f"{'Route / floor':<24}{summary['p50_ratio']:>9.2f}{'':>9}{summary['rps_ratio']:>10.2f}"
          f"{route.cpu_us_per_call / floor.cpu_us_per_call:>20.2f}")
    print(f"\ntargets: rps ratio >= 0.5, p50 ratio <= 1.5 -> {'met' if summary['targets_met'] else 'NOT met'}"
          f"  (concurrency {args.concurrency}, {args.duration:g}s per throughput phase, best of {ROUNDS} rounds)")
    if "fleet_scale" in extra:
        from switchpoint.bench.fleet_scale import format_fleet_scale

        print("\n" + format_fleet_scale(extra["fleet_scale"]))
    if "prompt_size" in extra:
        from switchpoint.bench.prompt_size import print_prompt_size

        print_prompt_size(extra["prompt_size"])
    if "peers" in extra:
        from switchpoint.bench.peer_cost import print_peer_cost

        print_peer_cost(extra["peers"])
    return 0
