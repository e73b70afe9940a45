"""The budget stage of the pipeline: reserve at Route (downgrading or refusing), settle at Report."""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from switchpoint.config.model import Pool, Pricing, RouterConfig
from switchpoint.router.budget.cost import OutputEstimator, amount, display, limit_units, unit_name
from switchpoint.router.budget.enforcer import BudgetCheck, BudgetEnforcer, BudgetLine
from switchpoint.router.budget.lease import LeaseBook
from switchpoint.router.budget.ledger import BudgetState
from switchpoint.router.budget.scope import BudgetInstance, Requester, applicable
from switchpoint.router.frozen import frozen
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.pipeline import RouteResult
from switchpoint.router.refusals import BudgetExhausted, Unavailable
from switchpoint.router.request import RouteInput


@frozen
class BudgetAdmission:
    """What was reserved for one request; kept in its in-flight entry until Report."""

    reservation_id: str
    outcome: str  # admitted, downgraded, observed, unenforced
    deciding: BudgetInstance | None
    lines: tuple[BudgetLine, ...]
    pricing: Pricing

    @property
    def reserved(self) -> bool:
        return self.outcome != "unenforced"


@dataclass(frozen=True)
class BudgetStanding:
    """Each budget's (or tenant instance's) state; None everywhere when the ledger could not be reached."""

    budgets: tuple[tuple[BudgetInstance, BudgetState | None], ...]
    ledger_reachable: bool


class BudgetGate:
    def __init__(self, enforcer: BudgetEnforcer, metrics: RouterMetrics, leases: bool = True):
        self.enforcer = enforcer
        self.estimator = OutputEstimator()
        self.metrics = metrics
        self.instance_id = os.urandom(6).hex()  # keeps reservation ids of different routers apart
        self.leases = LeaseBook(enforcer, self.instance_id, enabled=leases)

    async def admit(self, config: RouterConfig, req: RouteInput, result: RouteResult,
                    downgrade: Callable[[RouteResult, Pool, str], RouteResult],
                    ) -> tuple[RouteResult, BudgetAdmission | None]:
        """Reserve the request's expected amount in every budget that applies.

        Raises BudgetExhausted when a Reject budget is spent, Unavailable when
        the ledger is unreachable and a budget's failurePolicy is Closed.
        """
        pool = result.selection.candidate.pool
        who = Requester(result.policy.namespace if result.policy else pool.namespace,
                        result.policy.name if result.policy else "", req.tenant, req.user, req.metadata)
        instances = applicable(config.budgets, who)
        if not instances:
            return result, None
        rid = f"{self.instance_id}:{req.request_id}"
        expected_output = self.estimator.expected(result.outcome.decision.name, req.max_tokens)
        lines = self._lines(instances, req.input_tokens, expected_output, pool)
        leased = self.leases.take(lines)
        if leased is not None:  # within this router's leases: admitted without a ledger call
            for line in leased:
                self.metrics.budget_outcome(line.instance.name, "admitted")
            return result, BudgetAdmission(rid, "admitted", None, tuple(leased), pool.pricing)
        check = await self.enforcer.reserve(rid, lines)
        self.leases.reserved(check.lines)
        outcome = check.outcome
        if check.outcome == "downgrade":
            assert check.deciding is not None and check.deciding.budget.downgrade_to is not None
            budget = check.deciding.budget
            target = config.pools[f"{budget.namespace}/{budget.downgrade_to}"]
            result = downgrade(result, target, f"{check.deciding.describe()} is spent")
            pool = result.selection.candidate.pool
            deciding = check.deciding
            check = await self.enforcer.reserve(rid, self._lines(instances, req.input_tokens, expected_output, pool),
                                                force_soft=True)
            if check.outcome == "admitted":
                outcome, check = "downgraded", BudgetCheck("admitted", check.lines, deciding)
            else:
                outcome = check.outcome
        if outcome == "admitted" and any(ln.state and ln.state.exhausted for ln in check.lines):
            outcome = "observed"
            check = BudgetCheck("admitted", check.lines,
                                next(ln.instance for ln in check.lines if ln.state and ln.state.exhausted))
        store_down = outcome in ("unenforced", "refused")
        for line in check.lines:
            # the deciding budget gets the outcome; the others say whether they passed or went unenforced
            decided = check.deciding is None or line.instance == check.deciding
            label = outcome if decided else "unenforced" if store_down else "admitted"
            self.metrics.budget_outcome(line.instance.name, label)
        self._publish(check.lines)
        if outcome == "rejected":
            raise BudgetExhausted(_rejection(check), _retry_after_s(check))
        if outcome == "refused":
            assert check.deciding is not None
            raise Unavailable(f"the budget ledger is unreachable and {check.deciding.describe()} has failurePolicy "
                             "Closed; the request is refused")
        return result, BudgetAdmission(rid, outcome, check.deciding, check.lines, pool.pricing)

    def learn(self, decision: str, success: bool, completion_tokens: int) -> None:
        """A Report's completion length, for the decision's learned output estimate (once per request)."""
        if success and completion_tokens:
            self.estimator.observe(decision, completion_tokens)

    async def settle(self, admission: BudgetAdmission, success: bool, prompt_tokens: int,
                     completion_tokens: int) -> bool | None:
        """Replace the reservation by the actual usage, taking the request's settle-once mark in the same atomic
        ledger call: whether this was the request's first settlement on any replica (None when the ledger did not
        decide: nothing reserved, or the ledger unreachable and the settlement queued)."""
        if not admission.reserved or not admission.lines:
            return None  # admitted unenforced while the ledger was down: nothing was reserved, nothing is counted
        if success and not prompt_tokens and not completion_tokens:
            # no usage reported: charge what was reserved
            lines = [BudgetLine(ln.instance, ln.units, lease=ln.lease, share=ln.units) for ln in admission.lines]
        else:
            lines = [BudgetLine(ln.instance, amount(ln.instance.budget, prompt_tokens, completion_tokens,
                                                    admission.pricing), lease=ln.lease, share=ln.units)
                     for ln in admission.lines]
        done = await self.enforcer.settle(admission.reservation_id, lines, once=True)
        if done.states:
            self._publish([BudgetLine(ln.instance, ln.units, st) for ln, st in zip(lines, done.states, strict=True)])
        return done.first

    def _publish(self, lines: Iterable[BudgetLine]) -> None:
        for ln in lines:
            if ln.state is not None and not ln.instance.tenant:
                self.metrics.budget_standing(ln.instance.name, ln.instance.budget, ln.state)

    async def status(self, config: RouterConfig, tenant: str) -> BudgetStanding:
        instances = [BudgetInstance(b, tenant) if b.scope_type == "EachTenant" else BudgetInstance(b)
                     for b in config.budgets if b.scope_type != "EachTenant" or tenant]
        states = await self.enforcer.peek(instances)
        if states is None:
            return BudgetStanding(tuple((i, None) for i in instances), ledger_reachable=False)
        return BudgetStanding(tuple(zip(instances, states, strict=True)), ledger_reachable=True)

    @staticmethod
    def _lines(instances: tuple[BudgetInstance, ...], input_tokens: int, output_tokens: int,
               pool: Pool) -> list[BudgetLine]:
        return [BudgetLine(i, amount(i.budget, input_tokens, output_tokens, pool.pricing)) for i in instances]


@frozen
class BudgetView:
    """One budget line as users read it: display units (tokens, or the currency), RFC 3339 window end."""

    budget: str  # namespace/name, with /tenant for EachTenant budgets
    unit: str
    limit: float
    action: str
    request: float  # in a routing answer: this request's reserved amount
    spent: float | None = None  # None when the ledger could not be reached
    reserved: float | None = None
    remaining: float | None = None
    window_ends: str = ""
    exhausted: bool = False


def budget_view(instance: BudgetInstance, state: BudgetState | None, request_units: int = 0) -> BudgetView:
    b = instance.budget
    head = (instance.key, unit_name(b), display(b, limit_units(b)), b.action, display(b, request_units))
    if state is None:
        return BudgetView(*head)
    return BudgetView(*head, spent=display(b, state.spent), reserved=display(b, state.reserved),
                      remaining=display(b, state.remaining), window_ends=rfc3339(state.window_end_ms),
                      exhausted=state.exhausted)


def admission_views(admission: BudgetAdmission) -> tuple[BudgetView, ...]:
    return tuple(budget_view(ln.instance, ln.state, ln.units) for ln in admission.lines)


def _rejection(check: BudgetCheck) -> str:
    line = next(ln for ln in check.lines if ln.instance == check.deciding)
    b, state = line.instance.budget, line.state
    assert state is not None
    unit = unit_name(b)
    frees = (f"it frees up at {rfc3339(state.free_at_ms)}" if state.free_at_ms
             else "it frees up as requests in flight settle" if display(b, line.units) <= display(b, state.limit)
             else "this request alone exceeds the limit")
    return (f"{line.instance.describe()} is spent: {display(b, state.spent):,.6g} of {display(b, state.limit):,.6g} "
            f"{unit} used and {display(b, state.reserved):,.6g} reserved by requests in flight; this request needs "
            f"about {display(b, line.units):,.6g}; {frees}")


def _retry_after_s(check: BudgetCheck) -> float | None:
    """Seconds until the deciding budget frees up for this request, when its window says (HTTP Retry-After)."""
    state = next((ln.state for ln in check.lines if ln.instance == check.deciding), None)
    if state is None or not state.free_at_ms:
        return None
    return max(0.0, state.free_at_ms / 1000 - dt.datetime.now(dt.UTC).timestamp())


@functools.lru_cache(maxsize=1024)  # a window's end is the same for every request of the window (~7 us to format)
def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
