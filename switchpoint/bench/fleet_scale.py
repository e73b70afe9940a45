"""Route latency against fleet size: one pool of 2, 10, 100 and 1,000 static replicas, over real gRPC.

Called by `switchpoint bench router`. For each fleet size the pool and a policy that sends
every request to it are written as CR manifests in a temporary directory, and a router
process (`switchpoint router`, the same server a user runs) is started on them; all of them
run side by side. Sequential Route calls (concurrency 1) measure latency; the sizes take
turns, round after round, so drift on a shared machine falls on all of them alike, and each
figure is the median over the rounds. The prompts share a system prompt, so the prefix index
has blocks to match on every replica the router has sent them to. Replicas are static and not
scraped: nothing but the router's own accounting (in flight, prefill backlog, prefix index)
changes between calls, so the cost measured is the router's, not a scraper's.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from switchpoint.bench.router import ROUTE_METHOD, _latency, percentile
from switchpoint.config.manifests import API_VERSION
from switchpoint.localproc import RouterProcess
from switchpoint.v1 import router_pb2

FLEET_SIZES = (2, 10, 100, 1000)
ROUNDS = 3
CALLS, QUICK_CALLS = 1500, 300  # sequential Route calls per size and round
WARMUP_CALLS = 100
TARGET_RATIO = 1.5  # issue 12: p50 at 1,000 replicas within 1.5x of the 10-replica figure
ALIAS = "fleet"
SYSTEM_PROMPT = ("You are the support assistant of a hardware shop. Answer briefly, cite the order number when "
                 "the customer gives one, and never promise a refund without a manager's approval. ") * 3
QUESTIONS = ("Where is my order 1182?", "Can I return a keyboard after 40 days?", "Do you ship to Norway?",
             "My monitor arrived cracked, what now?", "Is the X200 laptop in stock?", "How do I reset my router?",
             "What does the extended warranty cover?", "Can I change the delivery address?")


@dataclass(frozen=True)
class FleetResult:
    p50_ms: float
    p99_ms: float
    cpu_us_per_call: float


def fleet_manifests(replicas: int) -> list[dict]:
    """A ModelPool with `replicas` static endpoints and a RoutingPolicy whose default sends there."""
    pool = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "fleet", "namespace": "default"},
            "spec": {"models": [{"name": "fleet-model"}], "hardwareClass": "sim", "contextTokens": 32768,
                     "replicas": {"static": [{"address": f"10.{i // 250}.{i % 250}.1:8000"}
                                             for i in range(replicas)]}}}
    policy = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": "fleet", "namespace": "default"},
              "spec": {"aliases": [ALIAS], "default": {"pools": [{"pool": "fleet"}]}}}
    return [pool, policy]


def write_fleet(replicas: int, directory: Path) -> Path:
    path = directory / f"fleet-{replicas}.yaml"
    path.write_text(yaml.safe_dump_all(fleet_manifests(replicas), sort_keys=False))
    return path


def payloads() -> list[bytes]:
    return [router_pb2.RouteRequest(model=ALIAS, messages=[
        router_pb2.ChatMessage(role="system", content=SYSTEM_PROMPT),
        router_pb2.ChatMessage(role="user", content=q)]).SerializeToString() for q in QUESTIONS]


async def _latencies(address: str, calls: int, warmup: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        if warmup:
            await _latency(channel, ROUTE_METHOD, payloads(), warmup)
        return await _latency(channel, ROUTE_METHOD, payloads(), calls)


def _round(router: RouterProcess, calls: int, warmup: int) -> FleetResult:
    cpu0 = router.cpu_seconds()
    lat = asyncio.run(_latencies(router.address, calls, warmup))
    cpu = router.cpu_seconds() - cpu0
    return FleetResult(statistics.median(lat) * 1e3, percentile(lat, 0.99) * 1e3, cpu / (calls + warmup) * 1e6)


def measure_fleet_scale(quick: bool = False, sizes: tuple[int, ...] = FLEET_SIZES, calls: int | None = None) -> dict:
    """Route p50/p99 (ms) and router CPU per call for each fleet size, as the JSON `bench router` prints.

    `calls` (per size and round) defaults to 1,500, or 300 with `quick`. The ratio the issue sets a
    target on needs sizes 10 and 1000; without them it is None."""
    calls = calls or (QUICK_CALLS if quick else CALLS)
    rounds: dict[int, list[FleetResult]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="switchpoint-fleet-") as tmp, contextlib.ExitStack() as stack:
        routers = {n: stack.enter_context(RouterProcess([write_fleet(n, Path(tmp))], metrics=False)) for n in sizes}
        for k in range(ROUNDS):
            for n, router in routers.items():
                rounds[n].append(_round(router, calls, WARMUP_CALLS if k == 0 else 0))
    fleet = {str(n): {"p50_ms": round(statistics.median(r.p50_ms for r in rs), 4),
                      "p99_ms": round(statistics.median(r.p99_ms for r in rs), 4),
                      "cpu_us_per_call": round(statistics.median(r.cpu_us_per_call for r in rs), 1)}
             for n, rs in rounds.items()}
    ratio = round(fleet["1000"]["p50_ms"] / fleet["10"]["p50_ms"], 3) if {"10", "1000"} <= fleet.keys() else None
    return {"fleet": fleet, "fleet_ratio_1000_vs_10": ratio, "fleet_target_ratio_max": TARGET_RATIO,
            "fleet_target_met": ratio is not None and ratio <= TARGET_RATIO,
            "fleet_calls_per_round": calls, "fleet_rounds": ROUNDS}


def format_fleet_scale(result: dict) -> str:
    """The table `bench router` prints for `measure_fleet_scale`'s result."""
    lines = [f"{'replicas in the pool':<24}{'p50 ms':>9}{'p99 ms':>9}{'router CPU us/call':>20}"]
    for n, r in result["fleet"].items():
        lines.append(f"{n:<24}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['cpu_us_per_call']:>20.0f}")
    ratio = result["fleet_ratio_1000_vs_10"]
    if ratio is not None:
        verdict = "met" if result["fleet_target_met"] else "NOT met"
        lines.append(f"\np50 at 1,000 replicas / p50 at 10: {ratio:.2f} (target <= {TARGET_RATIO:g}) -> {verdict}"
                     f"  (sequential Route calls, median of {result['fleet_rounds']} rounds of "
                     f"{result['fleet_calls_per_round']})")
    return "\n".join(lines)
