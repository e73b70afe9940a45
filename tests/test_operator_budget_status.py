"""Budget status shows spend and remaining, as the policy's routers report them (BudgetStatus RPC)."""

from __future__ import annotations

import asyncio

import grpc

from switchpoint.operator.kube import BUDGETS, DEPLOYMENTS, Connection, KubeApi
from switchpoint.operator.reconciler import Reconciler
from switchpoint.operator.settings import RouterSettings
from switchpoint.v1 import router_pb2, router_pb2_grpc
from tests.operator_support import Cluster, apply_examples, condition, eventually


class LedgerRouter(router_pb2_grpc.RouterServicer):
    """Stands in for a router: answers BudgetStatus from a fixed ledger."""

    async def BudgetStatus(self, request: router_pb2.BudgetStatusRequest,
                           context: grpc.aio.ServicerContext) -> router_pb2.BudgetStatusResponse:
        return router_pb2.BudgetStatusResponse(ledger_reachable=True, budgets=[
            router_pb2.BudgetState(budget="default/acme-daily-tokens", unit="total tokens", limit=5_000_000,
                                   spent=1234, reserved=10, remaining=4_998_756,
                                   window_ends="2026-01-02T00:00:00Z")])


def test_budget_status_shows_spend() -> None:
    asyncio.run(budget_spend())


async def budget_spend() -> None:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(LedgerRouter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    asked: list[tuple[str, str]] = []

    def address(namespace: str, service: str) -> str:
        asked.append((namespace, service))
        return f"127.0.0.1:{port}"

    try:
        async with Cluster() as cluster:
            await apply_examples(cluster)
            api = KubeApi(Connection(cluster.url, insecure=True))
            reconciler = Reconciler(api, RouterSettings(), router_address=address)
            await reconciler.reconcile("default")
            await cluster.call("PATCH", DEPLOYMENTS.path("default", "auto-router", "status"),
                               {"status": {"readyReplicas": 1}})
            await reconciler.reconcile("default")
            budget = await eventually(lambda: cluster.get(BUDGETS, "default", "acme-daily-tokens"))
            assert budget["status"]["spent"] == "1234" and budget["status"]["remaining"] == "4998756"
            assert budget["status"]["windowEnds"] == "2026-01-02T00:00:00Z"
            assert condition(budget, "Ready")["reason"] == "Enforced"
            assert asked == [("default", "auto-router")]
            await api.close()
    finally:
        await server.stop(0)
