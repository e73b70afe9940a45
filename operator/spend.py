"""Budget spend for Budget status, asked of a policy's routers (the BudgetStatus RPC).

The routers already read the shared ledger in Redis; asking one of them keeps the
operator free of Redis credentials and of the ledger's layout. Best effort: a
router that does not answer leaves the spend fields as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from switchpoint.operator.labels import GRPC_PORT, router_name
from switchpoint.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger("switchpoint.operator")

RouterAddress = Callable[[str, str], str]  # (namespace, service name) -> host:port


def service_address(namespace: str, service: str) -> str:
    return f"{service}.{namespace}.svc:{GRPC_PORT}"


@dataclass(frozen=True)
class Spend:
    spent: float
    remaining: float
    window_ends: str


async def fetch_spend(address: str, timeout_s: float = 3.0) -> dict[str, Spend]:
    """Spend by budget ("namespace/name") from one router; {} if it cannot tell (unreachable, no ledger)."""
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            answer = await router_pb2_grpc.RouterStub(channel).BudgetStatus(router_pb2.BudgetStatusRequest(),
                                                                               timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        log.debug("budget spend from %s unavailable: %s", address, exc.code().name)
        return {}
    if not answer.ledger_reachable:
        return {}
    return {b.budget: Spend(b.spent, b.remaining, b.window_ends) for b in answer.budgets}


async def namespace_spend(namespace: str, policies: list[str], address: RouterAddress) -> dict[str, Spend]:
    """Ask the routers of each policy with ready routers; every router of a namespace sees the same ledger."""
    spend: dict[str, Spend] = {}
    for policy in policies:
        spend.update(await fetch_spend(address(namespace, router_name(policy))))
    return spend


def format_amount(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.6f}"
