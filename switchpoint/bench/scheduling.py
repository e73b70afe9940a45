"""`switchpoint bench scheduling`: endpoint-picking policies on a simulated fleet, in virtual time.

Each run builds a RoutingPolicy whose pool uses one scheduling profile, compiles it with the
production compiler and routes and settles every request with the router core (RouterCore: pipeline, Scheduler
and in-flight ledger — the baselines are profiles of that same code (round_robin, random,
least_request, gie_default = the Gateway API Inference Extension's default profile: queue 2,
KV-cache 2, prefix 3, max-score picker). The fleet is four simulated replicas
(switchpoint.sim.engine, one H100 with an 8B model each), scraped every 50 ms of virtual
time. A request's Report reaches the router when its last token is out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from switchpoint.bench.router import percentile
from switchpoint.bench.workloads import WORKLOADS, WorkloadRequest
from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.config.model import RouterConfig
from switchpoint.router.classifiers.bank import Models
from switchpoint.router.core import Settlement, Snapshot
from switchpoint.router.core.offline import assemble
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.peers import LOADS_INTERVAL_S, PeerLoads, PeerMessage
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.selecting import Selectors
from switchpoint.sim.engine import Engine, EngineRequest, prompt_blocks, token_count
from switchpoint.sim.virtual import VirtualFleet

POLICIES = {"round_robin": "round-robin", "random": "random", "least_request": "least-request",
            "gie_default": "gie-default", "switchpoint": "switchpoint"}
REPLICAS = 4
TTFT_SLO_S = 3.0
TPOT_SLO_S = 0.1
DRAIN_S = 120.0
SLO_SERVED = 0.95  # a rate is "served within SLO" when 95% of its requests meet it
RATES = {"chat": [4, 8, 12, 16, 20], "mixed": [1, 2, 3, 4, 5, 6], "bursty": [2, 3, 4, 5, 6]}
QUICK_RATES = {"chat": [8, 16], "mixed": [2, 3, 4, 5], "bursty": [3, 5]}
SEEDS, SECONDS = (7, 8, 9), 200.0  # pooled: a p99 over one short run is its second-worst request
QUICK_SEEDS, QUICK_SECONDS = (7,), 60.0


@dataclass
class RunResult:
    ttft: list[float]
    tpot: list[float]
    output_tokens: int
    met_slo: int
    total: int
    duration: float

    def merge(self, other: RunResult) -> RunResult:
        return RunResult(self.ttft + other.ttft, self.tpot + other.tpot, self.output_tokens + other.output_tokens,
                         self.met_slo + other.met_slo, self.total + other.total, self.duration + other.duration)

    def summary(self) -> dict[str, float]:
        def ms(values: list[float], q: float) -> float:
            return round(percentile(values, q) * 1e3, 1) if values else float("nan")

        return {
            "ttft_p50_ms": ms(self.ttft, 0.5), "ttft_p99_ms": ms(self.ttft, 0.99),
            "tpot_p50_ms": ms(self.tpot, 0.5), "tpot_p99_ms": ms(self.tpot, 0.99),
            "throughput_tok_s": round(self.output_tokens / self.duration, 1),
            "slo_attainment": round(self.met_slo / self.total, 4) if self.total else 1.0,
        }


def bench_config(profile: str) -> RouterConfig:
    pool = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "bench"},
            "spec": {"models": [{"name": "sim-8b"}], "contextTokens": 65536, "metrics": {},
                     "replicas": {"static": [{"address": f"sim-{i}:8000"} for i in range(REPLICAS)]}}}
    policy = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": "bench"},
              "spec": {"aliases": ["bench"], "default": {"pools": [{"pool": "bench"}]},
                       "scheduling": [{"pool": "bench", "profile": profile}]}}
    return compile_manifests([Manifest("bench", pool), Manifest("bench", policy)])


@dataclass(frozen=True)
class Routers:
    """How many active routers share the fleet, and whether they tell each other what they place.

    Arrivals are spread over the routers at random (a load balancer in front of them); each router scrapes
    every replica itself and hears its own Reports. With `share`, a router's commits reach the others after
    `delay_s` (the peer channel, router/peering.py: a Redis pub/sub hop), and its in-flight counts every
    LOADS_INTERVAL_S."""

    count: int = 1
    share: bool = True
    delay_s: float = 0.005  # router/peering.py's FLUSH_S: a placement waits at most that long to be sent


ONE_ROUTER = Routers()


def run_once(profile: str, requests: list[WorkloadRequest], duration: float, seed: int,
             routers: Routers = ONE_ROUTER) -> RunResult:
    config = bench_config(profile)
    fleet = VirtualFleet([r.address for r in config.pools["default/bench"].static_replicas])
    cores, schedulers = [], []
    for n in range(routers.count):
        scheduler = Scheduler(InflightLedger(), FleetState(), clock=lambda: fleet.now, rng=random.Random(seed + n),
                              name=f"router-{n}")
        schedulers.append(scheduler)
        cores.append(assemble(Snapshot(config, Models(), Selectors()), scheduler))
    if routers.count > 1 and routers.share:
        _connect(schedulers, fleet, routers.delay_s)
    balancer = random.Random(seed + 10_000)
    served_by: dict[str, int] = {}
    loop = asyncio.new_event_loop()  # the core is async; in virtual time each call finishes without waiting
    ttft: list[float] = []
    tpot: list[float] = []
    out_tokens = 0
    met = 0
    announced = -LOADS_INTERVAL_S

    def arrive(item: tuple[int, WorkloadRequest]) -> None:
        index, w = item
        req = RouteInput(request_id=str(index), model="bench", messages=w.messages, max_tokens=w.output_tokens)
        n = balancer.randrange(routers.count)
        routed = loop.run_until_complete(cores[n].route(req))
        served_by[req.request_id] = n
        text = "".join(f"<|{m.role}|>{m.content}" for m in w.messages)
        fleet.submit(routed.replica, EngineRequest(req.request_id, token_count(text), w.output_tokens,
                                                   prompt_blocks(text)))

    def tokens(emitted: list[EngineRequest]) -> None:
        nonlocal out_tokens, met
        for r in emitted:
            if not r.done:
                continue
            first, per_token, report = completed(r)
            loop.run_until_complete(cores[served_by.pop(r.id)].settle(report))
            ttft.append(first)
            tpot.append(per_token)
            out_tokens += r.generated
            met += first <= TTFT_SLO_S and per_token <= TPOT_SLO_S

    def scrape(address: str, engine: Engine) -> None:
        nonlocal announced
        for scheduler in schedulers:
            scheduler.fleet.observe(address, fleet.now, engine.num_waiting, engine.num_running, engine.kv_usage)
        if routers.count > 1 and routers.share and fleet.now - announced >= LOADS_INTERVAL_S:
            announced = fleet.now
            for scheduler in schedulers:
                _deliver(schedulers, fleet, routers.delay_s, PeerLoads(scheduler.name, scheduler.ledger.loads()))

    for index, w in enumerate(requests):
        fleet.at(w.at, "arrival", (index, w))
    try:
        fleet.run(duration + DRAIN_S, arrive, tokens, scrape)
    finally:
        loop.close()
    # requests still unfinished after the drain count as SLO misses
    return RunResult(ttft, tpot, out_tokens, met, len(requests), duration)


def completed(r: EngineRequest) -> tuple[float, float, Settlement]:
    """A finished request's TTFT and time per output token (s), and the Report its frontend then sends."""
    assert r.first_token_at is not None and r.finished_at is not None
    first = r.first_token_at - r.arrival
    per_token = (r.finished_at - r.first_token_at) / (r.generated - 1) if r.generated > 1 else 0.0
    return first, per_token, Settlement(r.id, "success", r.prompt_tokens, r.generated, ttft_ms=first * 1000,
                                        latency_ms=(r.finished_at - r.arrival) * 1000)


def _connect(schedulers: list[Scheduler], fleet: VirtualFleet, delay_s: float) -> None:
    for scheduler in schedulers:
        scheduler.announce = lambda message: _deliver(schedulers, fleet, delay_s, message)


def _deliver(schedulers: list[Scheduler], fleet: VirtualFleet, delay_s: float,
             message: PeerMessage) -> None:
    """The peer channel in virtual time: every other router applies the message `delay_s` later."""
    for scheduler in schedulers:
        if scheduler.name != message.origin:
            fleet.at(fleet.now + delay_s, "call", partial(scheduler.apply, message))


def run(args: argparse.Namespace) -> int:
    rates = QUICK_RATES if args.quick else RATES
    seeds, duration = (QUICK_SEEDS, QUICK_SECONDS) if args.quick else (SEEDS, SECONDS)
    workloads = args.workloads or list(WORKLOADS)
    routers = Routers(args.routers, not args.no_share, args.peer_delay_ms / 1000)
    started = time.monotonic()
    show = None if args.json else _print_rate
    results = sweep(workloads, rates, seeds, duration, routers, show)
    verdict = targets(results)
    shared = None
    if routers.count > 1:  # the baseline: one router on the same fleet and arrivals
        one = sweep(workloads, rates, seeds, duration, ONE_ROUTER, None)
        shared = {"count": routers.count, "share": routers.share, "peer_delay_ms": args.peer_delay_ms,
                  "one_router": one, **router_targets(results, one)}
    elapsed = time.monotonic() - started
    plot = None if args.no_plot else _plot(results, Path(args.plot))
    if args.json:
        print(json.dumps({"workloads": results, "slo": {"ttft_s": TTFT_SLO_S, "tpot_s": TPOT_SLO_S},
                          "targets": verdict, "routers": shared, "plot": plot, "seconds": round(elapsed, 1)}))
        return 0
    print(f"\nSLO: TTFT <= {TTFT_SLO_S:g} s and TPOT <= {TPOT_SLO_S * 1e3:g} ms; {REPLICAS} simulated replicas; "
          f"{len(seeds)} seed(s) x {duration:g} s of arrivals per cell, pooled (+ drain), virtual time; "
          f"{elapsed:.0f} s wall clock")
    for line in verdict["lines"] + (shared["lines"] if shared else []):
        print(line)
    if plot:
        print(f"plot: {plot}")
    return 0


Results = dict[str, dict[str, dict[str, dict[str, float]]]]  # workload -> rate -> policy -> summary


def sweep(workloads: list[str], rates: dict[str, list[int]], seeds: tuple[int, ...], duration: float,
          routers: Routers, show: Callable[[str, float, dict[str, dict[str, float]]], None] | None) -> Results:
    """Every policy at every rate of every workload, its seeds pooled."""
    results: Results = {}
    for workload in workloads:
        results[workload] = {}
        for rate in rates[workload]:
            pooled: dict[str, RunResult] = {}
            for seed in seeds:
                requests = WORKLOADS[workload](rate, duration, random.Random(seed))
                for name, profile in POLICIES.items():
                    run = run_once(profile, requests, duration, seed, routers)
                    pooled[name] = pooled[name].merge(run) if name in pooled else run
            results[workload][str(rate)] = {name: r.summary() for name, r in pooled.items()}
            if show is not None:
                show(workload, rate, results[workload][str(rate)])
    return results


def router_targets(many: Results, one: Results, policy: str = "switchpoint") -> dict:
    """Issue target: with N active routers, p99 TTFT on `mixed` and `chat` within 10% of one router's, at
    every rate."""
    lines, ok = [], True
    for workload in ("mixed", "chat"):
        for rate, by_policy in many.get(workload, {}).items():
            n, single = by_policy[policy]["ttft_p99_ms"], one[workload][rate][policy]["ttft_p99_ms"]
            ratio = n / single if single else 1.0
            ok &= ratio <= 1.10
            lines.append(f"{workload} @ {rate}: {policy} p99 TTFT {n:.0f} ms with the routers vs {single:.0f} ms "
                         f"with one ({ratio:.2f}x; target <= 1.10x)")
    lines.append(f"N-router targets {'met' if ok else 'NOT met'}")
    return {"met": ok, "lines": lines}


def _print_rate(workload: str, rate: float, by_policy: dict[str, dict[str, float]]) -> None:
    print(f"\n{workload} @ {rate:g} req/s")
    print(f"  {'policy':<14}{'TTFT p50':>10}{'TTFT p99':>10}{'TPOT p50':>10}{'TPOT p99':>10}{'tok/s':>9}{'SLO':>7}")
    for name, s in by_policy.items():
        print(f"  {name:<14}{s['ttft_p50_ms']:>10.0f}{s['ttft_p99_ms']:>10.0f}{s['tpot_p50_ms']:>10.1f}"
              f"{s['tpot_p99_ms']:>10.1f}{s['throughput_tok_s']:>9.0f}{s['slo_attainment']:>7.1%}")


def targets(results: Results) -> dict:
    """Issue targets: on `mixed`, from the highest rate round robin still serves within SLO (>= 95%
    of requests within it) upwards, switchpoint's p99 TTFT is >= 25% below gie_default's; and on every
    workload and rate, its SLO attainment is within 5 points of the best baseline's."""
    lines = []
    ok = True
    mixed = results.get("mixed", {})
    rates = sorted(mixed, key=float)
    served = [r for r in rates if mixed[r]["round_robin"]["slo_attainment"] >= SLO_SERVED]
    start = served[-1] if served else (rates[0] if rates else None)
    if start is not None:
        for r in rates[rates.index(start):]:
            sp, gie = mixed[r]["switchpoint"]["ttft_p99_ms"], mixed[r]["gie_default"]["ttft_p99_ms"]
            cut = 1 - sp / gie if gie else 0.0
            ok &= cut >= 0.25
            lines.append(f"mixed @ {r}: p99 TTFT switchpoint {sp:.0f} ms vs gie_default {gie:.0f} ms "
                         f"({cut:+.0%} lower; target >= 25%)")
    worst = None
    for workload, by_rate in results.items():
        for r, by_policy in by_rate.items():
            best = max(v["slo_attainment"] for k, v in by_policy.items() if k != "switchpoint")
            gap = best - by_policy["switchpoint"]["slo_attainment"]
            if worst is None or gap > worst[0]:
                worst = (gap, workload, r)
    if worst is not None:
        ok &= worst[0] <= 0.05
        lines.append(f"largest SLO-attainment shortfall against the best baseline: {worst[0]:+.1%} "
                     f"({worst[1]} @ {worst[2]}; target <= 5 points)")
    behind = never_behind(results)
    ok &= not behind
    lines.append("within a pool, never behind (SLO attainment >= the best baseline's - 1 point, p99 TTFT <= 1.1 x "
                 "gie_default's): " + ("every cell" if not behind else "NOT met at " + ", ".join(behind)))
    lines.append(f"targets {'met' if ok else 'NOT met'}")
    return {"met": ok, "lines": lines, "behind": behind}


def never_behind(results: Results) -> list[str]:
    """The cells (workload @ rate) where switchpoint trails the best baseline's SLO attainment by more than one
    point or gie_default's p99 TTFT by more than 10 % (the joint-decision issue's "within a pool, never behind")."""
    behind = []
    for workload, by_rate in results.items():
        for r, by_policy in by_rate.items():
            sp = by_policy["switchpoint"]
            best = max(v["slo_attainment"] for k, v in by_policy.items() if k != "switchpoint")
            gie = by_policy.get("gie_default")
            slower = gie is not None and sp["ttft_p99_ms"] > 1.10 * gie["ttft_p99_ms"]
            if best - sp["slo_attainment"] > 0.01 or slower:
                behind.append(f"{workload} @ {r}")
    return behind


def _plot(results: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (workload, by_rate) in zip(axes[0], results.items(), strict=True):
        rates = sorted(by_rate, key=float)
        for name in POLICIES:
            ax.plot([float(r) for r in rates], [by_rate[r][name]["ttft_p99_ms"] / 1e3 for r in rates],
                    marker="o", label=name, linewidth=2.5 if name == "switchpoint" else 1.2)
        ax.set_title(workload)
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("p99 TTFT (s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


