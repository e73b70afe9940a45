"""`switchpoint bench router --sections peers`: what the peer channel costs per Route.

Two router processes on one local Redis, with the example policy and pools (no budgets, so Redis carries
only the peer channel), first with the channel off (`--peer-channel ""`), then on. In each mode router A
is measured (sequential latency, then throughput with its CPU time per call) while router B serves the same
throughput load at the same time, so that with the channel on A also applies every placement B announces.
The difference between the modes is what sharing costs a router: announcing its own commits and releases,
and applying its peer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from pathlib import Path

import grpc

from switchpoint.bench.router import ROUTE_METHOD, _latency, _throughput, percentile, route_payloads
from switchpoint.localproc import RouterProcess
from switchpoint.localredis import RedisServer

CONFIG = [Path("deploy/examples/policy.yaml"), Path("deploy/examples/pools.yaml")]
MODES = {"alone": [""], "peers": ["switchpoint:peers"]}


async def _phase(a: RouterProcess, b: RouterProcess, calls: int, concurrency: int, duration: float) -> dict:
    payloads = route_payloads()
    async with grpc.aio.insecure_channel(a.address) as ca, grpc.aio.insecure_channel(b.address) as cb:
        await _latency(ca, ROUTE_METHOD, payloads, 200)
        await _latency(cb, ROUTE_METHOD, payloads, 200)
        background = asyncio.create_task(_throughput(cb, ROUTE_METHOD, payloads, concurrency // 2, 1e9))
        try:
            lat = await _latency(ca, ROUTE_METHOD, payloads, calls)
            cpu0 = a.cpu_seconds()
            done, elapsed = await _throughput(ca, ROUTE_METHOD, payloads, concurrency // 2, duration)
            cpu = a.cpu_seconds() - cpu0
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await background
    return {"p50_ms": round(statistics.median(lat) * 1e3, 4), "p99_ms": round(percentile(lat, 0.99) * 1e3, 4),
            "rps": round(done / elapsed, 1), "cpu_us_per_call": round(cpu / done * 1e6, 1)}


def peer_cost(calls: int = 1000, concurrency: int = 32, duration: float = 4.0) -> dict:
    """{"alone": phase, "peers": phase, "added_cpu_us_per_route", "added_p50_ms"} for router A."""
    out: dict = {}
    with RedisServer(persist=False) as redis_server:
        for mode, channel in MODES.items():
            extra = ["--redis", redis_server.url, "--peer-channel", *channel]
            with RouterProcess(CONFIG, metrics=False, extra=extra) as a, \
                    RouterProcess(CONFIG, metrics=False, extra=extra) as b:
                out[mode] = asyncio.run(_phase(a, b, calls, concurrency, duration))
    out["added_cpu_us_per_route"] = round(out["peers"]["cpu_us_per_call"] - out["alone"]["cpu_us_per_call"], 1)
    out["added_p50_ms"] = round(out["peers"]["p50_ms"] - out["alone"]["p50_ms"], 4)
    return out


def print_peer_cost(result: dict) -> None:
    print("\npeer channel (two routers on one Redis; router A measured while B serves the same load)")
    print(f"  {'':<22}{'p50 ms':>9}{'p99 ms':>9}{'rps':>9}{'CPU us/Route':>14}")
    for mode in MODES:
        r = result[mode]
        print(f"  {mode:<22}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['rps']:>9.0f}{r['cpu_us_per_call']:>14.0f}")
    print(f"  sharing adds {result['added_cpu_us_per_route']:+.0f} us of router CPU and "
          f"{result['added_p50_ms'] * 1e3:+.0f} us of p50 per Route")
