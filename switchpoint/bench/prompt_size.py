"""Prompt size in `switchpoint bench router`: does a long prompt cost the router more, and stall short ones?

Two measurements on one router process (pinned to one core, the client on the other):

- **CPU per Route by prompt size**: router CPU time per call (Linux /proc, so the client's speed does not
  matter) for a 1 KB and a 1 MB prompt, sequential calls. Target: 1 MB costs at most 3x the CPU of 1 KB.
  Beside it, the same for Health/Check requests of those sizes on the same server: what gRPC itself
  spends to receive and parse a megabyte, which no router code can save.
- **Bursts**: the p99 of sequential small Routes alone, then while bursts of 40 concurrent 1 MB prompts
  arrive (a burst every BURST_EVERY_S seconds, each 40 Routes sent at once). Target: within 3x of the p99
  alone. (Forty clients that keep a 1 MB prompt in flight without pause saturate any single-core router;
  that is a capacity question, not head-of-line blocking.)

The policy is the worst case for prompt-proportional work: keyword and regex decisions are checked before
anything else (so every request scans its text), the pools accept a million-token context (so a 1 MB
prompt is routed, not refused for its size), and tokens are estimated for every message. What bounds the
scans is the policy's `textScan.maxChars` (default 4,096 characters: the head and tail of a longer text).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from switchpoint.bench.router import FLOOR_METHOD, ROUTE_METHOD, percentile
from switchpoint.localproc import RouterProcess, separate_cores
from switchpoint.v1 import router_pb2

CONFIG = """
apiVersion: switchpoint.dev/v1alpha1
kind: ModelPool
metadata: {name: small, namespace: default}
spec:
  models: [{name: small-model}]
  contextTokens: 2097152
  replicas: {static: [{address: "127.0.0.1:9101"}, {address: "127.0.0.1:9102"}]}
---
apiVersion: switchpoint.dev/v1alpha1
kind: ModelPool
metadata: {name: large, namespace: default}
spec:
  models: [{name: large-model}]
  contextTokens: 2097152
  replicas: {static: [{address: "127.0.0.1:9201"}, {address: "127.0.0.1:9202"}]}
---
apiVersion: switchpoint.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: scan, namespace: default}
spec:
  aliases: [scan]
  signals:
    - name: code
      keywords: {scope: all, terms: [def, class, function, compile, stack trace, traceback, python, rust, golang,
                                     javascript, typescript, sql, regex, refactor, segfault]}
    - name: math
      keywords: {scope: all, match: all, terms: [prove, theorem, integral]}
    - {name: arithmetic, regex: {scope: all, patterns: ['\\d+\\s*[-+*/^]\\s*\\d+', '(?i)\\bsolve\\s+for\\s+x\\b']}}
    - {name: long, contextTokens: {min: 6000}}
  decisions:
    - {name: coding, priority: 300, when: {signal: code}, pools: [{pool: large}]}
    - {name: maths, priority: 250, when: {any: [{signal: math}, {signal: arithmetic}]}, pools: [{pool: large}]}
    - {name: long-documents, priority: 200, when: {signal: long}, pools: [{pool: large}]}
  default: {pools: [{pool: small}]}
"""
FILLER = "Please summarise this report on the history of the printing press and its effect on literacy. "
BURST_CLIENTS = 40
BURST_EVERY_S = 0.5
SMALL_CALLS = 1500


def _payload(size: int) -> bytes:
    text = (FILLER * (size // len(FILLER) + 1))[:size]
    msg = router_pb2.RouteRequest(model="scan", messages=[router_pb2.ChatMessage(role="user", content=text)])
    return msg.SerializeToString()


def _floor_payload(size: int) -> bytes:
    """A Health/Check request of about `size` bytes (its service name): the transport's own cost of the size."""
    return health_pb2.HealthCheckRequest(service="x" * size).SerializeToString()


async def _cpu_per_call(router: RouterProcess, channel: grpc.aio.Channel, payload: bytes, calls: int,
                        method: str = ROUTE_METHOD) -> float:
    call = channel.unary_unary(method)

    async def once() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # the floor's unknown service name: NOT_FOUND
            await call(payload)

    for _ in range(min(20, calls)):  # warm-up
        await once()
    cpu0 = router.cpu_seconds()
    for _ in range(calls):
        await once()
    return (router.cpu_seconds() - cpu0) / calls * 1e6


async def _small_latencies(channel: grpc.aio.Channel, calls: int) -> list[float]:
    call, payload, out = channel.unary_unary(ROUTE_METHOD), _payload(1024), []
    for _ in range(calls):
        t0 = time.perf_counter()
        await call(payload)
        out.append(time.perf_counter() - t0)
    return out


async def _burst(channel: grpc.aio.Channel, burst_channel: grpc.aio.Channel, calls: int) -> tuple[list[float], int]:
    """Small-Route latencies while a burst of BURST_CLIENTS 1 MB Routes arrives every BURST_EVERY_S, from another
    client (its own connection: on a shared one, the small requests' frames would queue behind 40 MB of data)."""
    big, stop, sent = _payload(1 << 20), asyncio.Event(), 0
    call = burst_channel.unary_unary(ROUTE_METHOD)

    async def bursts() -> None:
        nonlocal sent
        while not stop.is_set():
            await asyncio.gather(*(call(big) for _ in range(BURST_CLIENTS)))
            sent += BURST_CLIENTS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BURST_EVERY_S)

    task = asyncio.create_task(bursts())
    try:
        lat = await _small_latencies(channel, calls)
    finally:
        stop.set()
        await task
    return lat, sent


async def _measure(router: RouterProcess, quick: bool) -> dict[str, float]:
    options = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    small_calls = 300 if quick else SMALL_CALLS
    async with grpc.aio.insecure_channel(router.address, options=options) as channel, \
            grpc.aio.insecure_channel(router.address, options=[*options, ("grpc.use_local_subchannel_pool", 1)]) \
            as other:
        small_n, big_n = (200, 20) if quick else (1000, 100)
        floor_1k = await _cpu_per_call(router, channel, _floor_payload(1024), small_n, FLOOR_METHOD)
        floor_1m = await _cpu_per_call(router, other, _floor_payload(1 << 20), big_n, FLOOR_METHOD)
        cpu_1k = await _cpu_per_call(router, channel, _payload(1024), small_n)
        cpu_1m = await _cpu_per_call(router, other, _payload(1 << 20), big_n)
        alone = await _small_latencies(channel, small_calls)
        loaded, big_sent = await _burst(channel, other, small_calls)
    return {
        "cpu_us_1kb": round(cpu_1k, 1),
        "cpu_us_1mb": round(cpu_1m, 1),
        "cpu_ratio_1mb_vs_1kb": round(cpu_1m / cpu_1k, 2),
        "floor_cpu_us_1kb": round(floor_1k, 1),
        "floor_cpu_us_1mb": round(floor_1m, 1),
        "floor_cpu_ratio_1mb_vs_1kb": round(floor_1m / floor_1k, 2),
        "small_p50_alone_ms": round(statistics.median(alone) * 1e3, 3),
        "small_p99_alone_ms": round(percentile(alone, 0.99) * 1e3, 3),
        "small_p50_burst_ms": round(statistics.median(loaded) * 1e3, 3),
        "small_p99_burst_ms": round(percentile(loaded, 0.99) * 1e3, 3),
        "burst_p99_ratio": round(percentile(loaded, 0.99) / percentile(alone, 0.99), 2),
        "burst_1mb_routes": big_sent,
    }


def prompt_size(quick: bool = False) -> dict[str, float | bool]:
    with tempfile.TemporaryDirectory(prefix="switchpoint-bench-") as tmp:
        config = Path(tmp) / "scan.yaml"
        config.write_text(CONFIG)
        with RouterProcess([config], metrics=False) as router, separate_cores(router.pid):
            result: dict[str, float | bool] = dict(asyncio.run(_measure(router, quick)))
    result["targets_met"] = result["cpu_ratio_1mb_vs_1kb"] <= 3 and result["burst_p99_ratio"] <= 3
    return result


def print_prompt_size(r: dict[str, float | bool]) -> None:
    print(f"\nprompt size (policy scanning every request; router on one core)\n"
          f"  router CPU per Route: 1 KB {r['cpu_us_1kb']:.0f} us, 1 MB {r['cpu_us_1mb']:.0f} us "
          f"-> x{r['cpu_ratio_1mb_vs_1kb']:.2f} (target <= 3)\n"
          f"  the transport alone (Health/Check of the same sizes): 1 KB {r['floor_cpu_us_1kb']:.0f} us, "
          f"1 MB {r['floor_cpu_us_1mb']:.0f} us -> x{r['floor_cpu_ratio_1mb_vs_1kb']:.2f}\n"
          f"  small Routes p99: alone {r['small_p99_alone_ms']:.2f} ms, during bursts of {BURST_CLIENTS} concurrent "
          f"1 MB prompts every {BURST_EVERY_S:g} s {r['small_p99_burst_ms']:.2f} ms -> x{r['burst_p99_ratio']:.2f} "
          f"(target <= 3; {r['burst_1mb_routes']} 1 MB Routes served meanwhile)")
