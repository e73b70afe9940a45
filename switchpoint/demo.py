"""`make demo`: a local router on the example policy, routing sample prompts over real gRPC."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc

from switchpoint.localproc import RouterProcess
from switchpoint.localredis import RedisServer
from switchpoint.v1 import router_pb2, router_pb2_grpc

SAMPLES: list[tuple[str, dict]] = [
    ("Hi! What's a good name for a golden retriever?", {}),
    ("Refactor this Python class so the parser stops leaking file handles:\n```python\nclass P: ...\n```", {}),
    ("what is 12 * 13?", {}),
    ("Prove that the eigenvalues of a real symmetric matrix are real, step by step.", {}),
    ("Book me a table for two tonight.", {"tools_present": True}),
    ("Summarise our Q3 numbers.", {"tenant": "acme"}),
    ("Translate 'good morning' to French.", {"metadata": {"x-priority": "high"}}),
    ("Summarise this contract:\n" + "The party of the first part shall indemnify the other party. " * 700, {}),
    ("Tell me a joke about routers.", {"model": "meta-llama/Llama-3.1-8B-Instruct"}),
]


def run_demo(config: list[Path]) -> int:
    with RedisServer() as redis, RouterProcess(config, extra=["--redis", redis.url]) as router:
        print(f"router in local mode on {router.address}, config {' '.join(map(str, config))}, "
              f"budgets in Redis at {redis.url}\n")
        header = f"{'#':>2}  {'prompt':<42} {'signals fired':<30} {'decision':<15} {'pool':<16} replica (prefill)"
        print(header)
        print("-" * len(header))
        with grpc.insecure_channel(router.address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            for i, (prompt, extra) in enumerate(SAMPLES, 1):
                fields = {"model": "auto", **extra}
                request = router_pb2.RouteRequest(messages=[router_pb2.ChatMessage(role="user", content=prompt)],
                                                  **fields)
                short = prompt.replace("\n", " ")
                short = short[:39] + "..." if len(short) > 42 else short
                try:
                    d = stub.Route(request, timeout=5)
                except grpc.RpcError as exc:
                    print(f"{i:>2}  {short:<42} refused: {exc.code().name}: {exc.details()}")
                    continue
                replica = d.replica + (f" ({d.prefill_replica})" if d.prefill_replica else "")
                print(f"{i:>2}  {short:<42} {','.join(d.signals) or '-':<30} {d.decision:<15} {d.pool:<16} {replica}")
                stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS),
                            timeout=5)
            try:
                stub.Route(router_pb2.RouteRequest(model="no-such-model",
                                                   messages=[router_pb2.ChatMessage(role="user", content="hi")]))
            except grpc.RpcError as exc:
                print(f"\nunknown alias -> {exc.code().name}: {exc.details()}")
            _spend_the_trial_budget(stub)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{router.metrics_port}/metrics", timeout=5).read().decode()
        routed = [line for line in metrics.splitlines() if line.startswith("switchpoint_route_requests_total")]
        example = routed[0] if routed else "-"
        print(f"\n/metrics: {len(routed)} series of switchpoint_route_requests_total, e.g.\n  {example}")
    return 0


def _spend_the_trial_budget(stub: router_pb2_grpc.RouterStub) -> None:
    """Tenant `trial` has 2,000 tokens an hour (deploy/examples/budgets.yaml): route until it is spent."""
    request = router_pb2.RouteRequest(model="auto", tenant="trial", max_tokens=300,
                                      messages=[router_pb2.ChatMessage(role="user", content="Write me a haiku.")])
    for n in range(1, 20):
        try:
            d = stub.Route(request, timeout=5)
        except grpc.RpcError as exc:
            print(f"\ntenant 'trial', request {n} -> {exc.code().name}: {exc.details()}")
            return
        [trial] = [b for b in d.budget.budgets if b.budget.endswith("trial-tenant-tokens")]
        print(f"tenant 'trial', request {n}: admitted, reserved {trial.request:.0f} tokens, "
              f"{trial.remaining:,.0f} of {trial.limit:,.0f} left")
        stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                             prompt_tokens=12, completion_tokens=280), timeout=5)
