"""Which budgets apply to a request (pure).

A Budget governs requests routed by RoutingPolicies of its own namespace (for a request
that names a served model directly, the namespace of the pool chosen). `spec.policy`
narrows it to one policy. The scope picks the requests: Tenant, User, Team (a request
header) or Policy by name; EachTenant gives every tenant its own instance of the budget
(requests without a tenant are not subject to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchpoint.config.model import Budget
from switchpoint.router.frozen import frozen


@dataclass(frozen=True)
class BudgetInstance:
    budget: Budget
    tenant: str = ""  # set for EachTenant budgets

    @property
    def name(self) -> str:
        """The Budget object, namespace/name: the bounded label used in metrics."""
        return f"{self.budget.namespace}/{self.budget.name}"

    @property
    def key(self) -> str:
        """The ledger identity: one per budget, or per budget and tenant."""
        return f"{self.name}/{self.tenant}" if self.tenant else self.name

    def describe(self) -> str:
        return f"budget {self.name}" + (f" (tenant {self.tenant})" if self.tenant else "")


@frozen
class Requester:
    namespace: str
    policy: str  # the RoutingPolicy's name, "" for direct requests
    tenant: str
    user: str
    metadata: dict[str, str]


def applicable(budgets: tuple[Budget, ...], who: Requester) -> tuple[BudgetInstance, ...]:
    found = []
    for b in budgets:
        if b.namespace != who.namespace or (b.policy is not None and b.policy != who.policy):
            continue
        match b.scope_type:
            case "Tenant" if who.tenant == b.scope_name:
                found.append(BudgetInstance(b))
            case "User" if who.user == b.scope_name:
                found.append(BudgetInstance(b))
            case "Team" if who.metadata.get(b.team_header) == b.scope_name:
                found.append(BudgetInstance(b))
            case "Policy" if who.policy == b.scope_name:
                found.append(BudgetInstance(b))
            case "EachTenant" if who.tenant:
                found.append(BudgetInstance(b, who.tenant))
    return tuple(found)
