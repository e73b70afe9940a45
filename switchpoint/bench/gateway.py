"""`switchpoint bench gateway`: what the ext_proc front door adds to Envoy, in one run.

Three ways to the same simulated replicas, for the same ~1 KB chat request (non-streaming, 8 tokens):

* Envoy alone: the gateway's own Envoy config (the auth filter included) with the ext_proc filters
  removed and a static cluster of the replicas: the floor.
* Envoy + Switchpoint ext_proc, per body mode: `split` (BUFFERED request: headers + body, two messages,
  the response observed in observability mode, as `switchpoint gateway` ships) and `duplex`
  (FULL_DUPLEX_STREAMED both ways, trailers sent: the endpoint-picker protocol of GIE and llm-d).
* Direct gRPC: Route, the HTTP call to the replica, Report (the frontend of `switchpoint demo`).

The router is a `switchpoint router` process pinned to one core, on the example policy with its pools
moved onto simulated replicas that spend no GPU time (the engine model with zero-time iterations), so
what is measured is the path, not the model. Phases alternate in rounds; each figure is the median over
the rounds. Latency is sequential calls on one keep-alive connection; throughput is `--concurrency`
connections for `--duration` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchpoint.gateway import GatewayConfig

# This module is also the simulated replicas' process (`python -m switchpoint.bench.gateway FLEET`): what only
# the benchmark needs is imported where it is used, so that process starts in well under a second.

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
QUESTION = ("I run a small team that ships a web service. We see latency spikes every afternoon and I suspect the "
            "database connection pool. Explain how to confirm it, which metrics to watch, and what to change first. ")
SYSTEM = "You are a careful, concise site-reliability assistant. Answer in short numbered steps. "


def chat_body(model: str = "auto") -> bytes:
    """A ~1 KB chat request for the alias `auto` (the example policy's default decision); Envoy alone gets the
    model name the router would have put there."""
    body = {"model": model, "max_tokens": 8, "messages": [
        {"role": "system", "content": SYSTEM * 2}, {"role": "user", "content": QUESTION * 3}]}
    return json.dumps(body).encode()


def http_request(body: bytes, host: str) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection reading Content-Length responses: the least client CPU per call."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: str) -> Connection:
        host, port = address.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def call(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True  # a body an ext_proc streamed back loses its length
        if chunked:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"HTTP {status} from the gateway")
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Phase:
    p50_ms: float
    p99_ms: float
    rps: float


async def _http_phase(address: str, request: bytes, calls: int, concurrency: int, duration: float) -> Phase:
    from switchpoint.bench.router import percentile

    conn = await Connection.open(address)
    for _ in range(50):
        await conn.call(request)
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await conn.call(request)
        lat.append(time.perf_counter() - t0)
    conn.close()
    conns = [await Connection.open(address) for _ in range(concurrency)]
    done = 0
    deadline = time.perf_counter() + duration

    async def worker(c: Connection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await c.call(request)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return Phase(statistics.median(lat) * 1e3, percentile(lat, 0.99) * 1e3, done / elapsed)


async def _direct_phase(router: str, calls: int, concurrency: int, duration: float) -> Phase:
    """Route over gRPC, the replica over HTTP, Report: the Router API's own path for the same request."""
    import grpc

    from switchpoint.bench.router import percentile
    from switchpoint.v1 import router_pb2

    body = json.loads(chat_body())
    route = router_pb2.RouteRequest(model="auto", max_tokens=8, messages=[
        router_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in body["messages"]])
    async with grpc.aio.insecure_channel(router) as channel:
        route_call = channel.unary_unary("/switchpoint.v1.Router/Route", request_serializer=None,
                                         response_deserializer=router_pb2.Decision.FromString)
        report_call = channel.unary_unary("/switchpoint.v1.Router/Report")
        conns: dict[str, Connection] = {}

        async def one(pool: dict[str, Connection]) -> None:
            d = await route_call(route.SerializeToString())
            conn = pool.get(d.replica)
            if conn is None:
                conn = pool[d.replica] = await Connection.open(d.replica)
            await conn.call(http_request(json.dumps({**body, "model": d.model}).encode(), d.replica))
            await report_call(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                       prompt_tokens=250, completion_tokens=8).SerializeToString())

        for _ in range(50):
            await one(conns)
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await one(conns)
            lat.append(time.perf_counter() - t0)
        done = 0
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done
            mine: dict[str, Connection] = {}
            while time.perf_counter() < deadline:
                await one(mine)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Phase(statistics.median(lat) * 1e3, percentile(lat, 0.99) * 1e3, done / (time.perf_counter() - t0))


def _fast_fleet(config: list[Path], tmp: Path) -> tuple[Path, list[dict], list[str]]:
    """The config with every static replica moved to a free local port; the fleet to serve there."""
    import yaml

    from switchpoint.config.manifests import manifest_files
    from switchpoint.localredis import free_port

    config_dir = tmp / "config"
    config_dir.mkdir()
    replicas, small = [], []
    for f in manifest_files(config):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        for doc in docs:
            if doc.get("kind") == "ModelPool" and "static" in doc.get("spec", {}).get("replicas", {}):
                for r in doc["spec"]["replicas"]["static"]:
                    port = free_port()
                    r["address"] = f"127.0.0.1:{port}"
                    replicas.append({"port": port, "model": doc["spec"]["models"][0]["name"],
                                     "role": r.get("role", "both")})
                    if doc["spec"]["models"][0]["name"] == MODEL:
                        small.append(r["address"])
        (config_dir / f.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return config_dir, replicas, small


async def _serve_fast_fleet(fleet: list[dict]) -> None:
    """Simulated replicas whose engine iterations take no time (run as a child process of the bench)."""
    from aiohttp import web

    from switchpoint.sim.engine import EngineConfig
    from switchpoint.sim.server import SimReplica

    zero = EngineConfig(iteration_base_ms=0.0, decode_ms_per_seq=0.0, prefill_ms_per_token=0.0,
                        kv_transfer_base_ms=0.0, kv_transfer_ms_per_token=0.0)
    for spec in fleet:  # "realtime": the engine's default timings (an H100 serving an 8B model) instead
        config = None if spec.get("realtime") else zero
        runner = web.AppRunner(SimReplica(spec["model"], spec["role"], config=config).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", spec["port"]).start()
    print("fleet ready", flush=True)
    await asyncio.Event().wait()


class FastFleet:
    """Simulated replicas whose engine spends no time (unless a replica says "realtime"), in a child process,
    stopped on exit."""

    def __init__(self, fleet: list[dict]):
        self.fleet = fleet
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FastFleet:
        self.proc = subprocess.Popen([sys.executable, "-m", "switchpoint.bench.gateway", json.dumps(self.fleet)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if "fleet ready" not in self.proc.stdout.readline():
            self.proc.kill()
            raise RuntimeError(f"the simulated replicas did not start (exit {self.proc.wait()})")
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the replicas (again is fine: a test may kill them before the end)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None


def _baseline_config(cfg: GatewayConfig, replicas: list[str]) -> dict:
    """The gateway's config with the ext_proc filters out and a static cluster of the replicas."""
    from switchpoint.gateway import envoy_config

    config = envoy_config(cfg)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if "ext_proc" not in f["typed_config"]["@type"]]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "route": {"cluster": "replicas", "timeout": "60s"}}]
    clusters = config["static_resources"]["clusters"]
    clusters.append({"name": "replicas", "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
        "cluster_name": "replicas", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": a.rsplit(":", 1)[0],
                                                         "port_value": int(a.rsplit(":", 1)[1])}}}}
            for a in replicas]}]}})
    return config


def run(args: argparse.Namespace) -> int:
    from switchpoint.gateway import EnvoyProcess, GatewayConfig, envoy_config, wait_extproc
    from switchpoint.localproc import RouterProcess
    from switchpoint.localredis import free_port

    with tempfile.TemporaryDirectory(prefix="switchpoint-bench-gateway-") as tmp, contextlib.ExitStack() as stack:
        config_dir, fleet, small = _fast_fleet([Path(p) for p in args.config], Path(tmp))
        stack.enter_context(FastFleet(fleet))
        extproc_port = free_port()
        router = stack.enter_context(RouterProcess([config_dir], metrics=False,
                                                   extra=["--extproc-port", str(extproc_port)]))
        if not args.no_pin:
            os.sched_setaffinity(router.pid, {os.cpu_count() - 1 if os.cpu_count() else 0})
        wait_extproc(f"127.0.0.1:{extproc_port}")
        envoys = {}
        for mode in args.modes:
            cfg = GatewayConfig(router_address=f"127.0.0.1:{extproc_port}", port=0, admin_port=0, mode=mode)
            envoys[mode] = stack.enter_context(EnvoyProcess(envoy_config(cfg)))
        base_cfg = GatewayConfig(router_address=f"127.0.0.1:{extproc_port}", port=0, admin_port=0)
        envoys["envoy_only"] = stack.enter_context(EnvoyProcess(_baseline_config(base_cfg, small)))
        results: dict[str, list[Phase]] = {name: [] for name in [*envoys, "direct"]}
        body = chat_body()
        for _ in range(args.rounds):
            for name, envoy in envoys.items():
                request = http_request(chat_body(MODEL) if name == "envoy_only" else body, envoy.address)
                results[name].append(asyncio.run(_http_phase(envoy.address, request, args.calls, args.concurrency,
                                                             args.duration)))
            if not args.no_direct:
                results["direct"].append(asyncio.run(_direct_phase(router.address, args.calls, args.concurrency,
                                                                   args.duration)))
    return _report(results, args, len(body))


def _median(phases: list[Phase]) -> Phase:
    return Phase(statistics.median(p.p50_ms for p in phases), statistics.median(p.p99_ms for p in phases),
                 statistics.median(p.rps for p in phases))


def _report(results: dict[str, list[Phase]], args: argparse.Namespace, body_bytes: int) -> int:
    med = {name: _median(phases) for name, phases in results.items() if phases}
    base = med["envoy_only"]
    main = args.modes[0]
    summary: dict[str, object] = {
        "envoy_only_p50_ms": round(base.p50_ms, 3), "envoy_only_p99_ms": round(base.p99_ms, 3),
        "envoy_only_rps": round(base.rps, 1),
        "extproc_mode": main, "extproc_body_mode": BODY_MODES[main],
        "extproc_p50_ms": round(med[main].p50_ms, 3), "extproc_p99_ms": round(med[main].p99_ms, 3),
        "extproc_rps": round(med[main].rps, 1),
        "added_p50_ms": round(med[main].p50_ms - base.p50_ms, 3),
        "added_p99_ms": round(med[main].p99_ms - base.p99_ms, 3),
        "modes": {m: {"body_mode": BODY_MODES[m], "p50_ms": round(med[m].p50_ms, 3), "p99_ms": round(med[m].p99_ms, 3),
                      "rps": round(med[m].rps, 1), "added_p50_ms": round(med[m].p50_ms - base.p50_ms, 3),
                      "added_p99_ms": round(med[m].p99_ms - base.p99_ms, 3)} for m in args.modes},
        "request_bytes": body_bytes, "router_pinned": not args.no_pin,
        "rounds": args.rounds, "calls": args.calls, "concurrency": args.concurrency,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": {"added_p50_ms_max": 2.0, "added_p99_ms_max": 5.0},
    }
    if "direct" in med:
        d = med["direct"]
        summary.update(direct_p50_ms=round(d.p50_ms, 3), direct_p99_ms=round(d.p99_ms, 3), direct_rps=round(d.rps, 1))
    summary["targets_met"] = summary["added_p50_ms"] <= 2.0 and summary["added_p99_ms"] <= 5.0  # type: ignore[operator]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"a {body_bytes:,}-byte chat request, median of {args.rounds} rounds ({args.calls} sequential calls; "
          f"throughput at concurrency {args.concurrency} for {args.duration:g} s); router "
          f"{'on any core' if args.no_pin else 'pinned to one core'}\n")
    print(f"{'path':<64}{'p50 ms':>9}{'p99 ms':>9}{'rps':>8}{'+p50 ms':>9}{'+p99 ms':>9}")
    rows = [("Envoy alone -> replica", base, False)]
    rows += [(f"Envoy + ext_proc, {m} ({BODY_MODES[m]})", med[m], True) for m in args.modes]
    if "direct" in med:
        rows.append(("direct gRPC Route + replica + Report", med["direct"], False))
    for label, p, added in rows:
        plus = f"{p.p50_ms - base.p50_ms:>9.3f}{p.p99_ms - base.p99_ms:>9.3f}" if added else ""
        print(f"{label:<64}{p.p50_ms:>9.3f}{p.p99_ms:>9.3f}{p.rps:>8.0f}{plus}")
    print(f"\ntarget: ext_proc ({main}) adds <= 2 ms p50 and <= 5 ms p99 over Envoy alone -> "
          f"{'met' if summary['targets_met'] else 'NOT met'}; load average {summary['load_average']}")
    return 0


BODY_MODES = {"split": "BUFFERED request, observed response", "duplex": "FULL_DUPLEX_STREAMED",
              "buffered": "BUFFERED both ways"}


def add_parser(bench: argparse._SubParsersAction) -> None:
    b = bench.add_parser("gateway", help="Envoy alone vs Envoy + Switchpoint ext_proc vs direct Route+Report")
    b.set_defaults(run=run)
    b.add_argument("--config", nargs="+", default=["deploy/examples"], metavar="PATH")
    b.add_argument("--modes", nargs="+", choices=list(BODY_MODES), default=["split", "duplex"],
                   help="gateway modes to measure; the first one is the headline")
    b.add_argument("--rounds", type=int, default=3, help="rounds of all phases; figures are medians over rounds")
    b.add_argument("--calls", type=int, default=1000, help="sequential calls per latency phase")
    b.add_argument("--concurrency", type=int, default=16)
    b.add_argument("--duration", type=float, default=3.0, help="seconds of each throughput phase")
    b.add_argument("--no-direct", action="store_true", help="skip the direct gRPC Route+Report path")
    b.add_argument("--no-pin", action="store_true",
                   help="let the router run on any core (default: pinned to the last one, as a one-CPU pod)")
    b.add_argument("--json", action="store_true", help="print one JSON object")


if __name__ == "__main__":  # the bench's simulated replicas, in their own process
    asyncio.run(_serve_fast_fleet(json.loads(sys.argv[1])))
