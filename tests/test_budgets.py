"""Budgets through the router over gRPC, with a real Redis: reject, downgrade, observe, status, faults."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import grpc
import pytest

from switchpoint.config.compiler import load_config
from switchpoint.config.model import Pricing
from switchpoint.router.budget.cost import OutputEstimator, amount
from switchpoint.router.budget.scope import Requester, applicable
from switchpoint.v1 import router_pb2

from .conftest import ThreadedRouter, chat

BUDGETS = """
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: acme-tokens}
spec:
  scope: {type: Tenant, name: acme}
  window: {duration: 1h}
  limit: {tokens: 250}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: globex-spend}
spec:
  scope: {type: Tenant, name: globex}
  window: {duration: 1d, reset: Calendar}
  limit: {amount: 0.00015}
  onExhausted: {action: Downgrade, downgradeTo: small-chat}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: initech-watch}
spec:
  scope: {type: Tenant, name: initech}
  window: {duration: 1h}
  limit: {tokens: 50}
  onExhausted: {action: Observe}
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: umbrella-guard}
spec:
  scope: {type: Tenant, name: umbrella}
  window: {duration: 1h}
  limit: {tokens: 1000000}
  failurePolicy: Closed
---
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: per-tenant}
spec:
  scope: {type: EachTenant}
  policy: auto
  window: {duration: 1h}
  limit: {tokens: 100000}
"""


@pytest.fixture
def budget_config(config_dir: Path) -> Path:
    (config_dir / "budgets.yaml").write_text(BUDGETS)
    return config_dir


# -- which budgets apply, and what a request costs (pure) ------------------------------------------


def _budgets(config_dir: Path):
    return load_config([config_dir]).budgets


@pytest.mark.parametrize(("who", "expected"), [
    (Requester("default", "auto", "acme", "", {}), {"acme-tokens", "per-tenant"}),
    (Requester("default", "", "acme", "", {}), {"acme-tokens"}),  # direct request: no policy-bound budgets
    (Requester("default", "auto", "", "", {}), set()),  # no tenant: no EachTenant instance
    (Requester("other", "auto", "acme", "", {}), set()),  # another namespace
    (Requester("default", "auto", "globex", "", {}), {"globex-spend", "per-tenant"}),
])
def test_applicable_budgets(budget_config, who, expected):
    assert {i.budget.name for i in applicable(_budgets(budget_config), who)} == expected


def test_each_tenant_budgets_get_one_instance_per_tenant(budget_config):
    budgets = _budgets(budget_config)
    a = applicable(budgets, Requester("default", "auto", "a", "", {}))
    b = applicable(budgets, Requester("default", "auto", "b", "", {}))
    assert [i.key for i in a] == ["default/per-tenant/a"] and [i.key for i in b] == ["default/per-tenant/b"]


def test_amounts_in_tokens_and_in_money(budget_config):
    budgets = {b.name: b for b in _budgets(budget_config)}
    price = Pricing(0.9, 1.8)
    assert amount(budgets["acme-tokens"], 100, 50, price) == 150
    # 100 x 0.9 + 50 x 1.8 = 180 USD per million tokens = 180,000 nano-USD
    assert amount(budgets["globex-spend"], 100, 50, price) == 180_000


def test_output_estimate_learns_an_upper_bound():
    est = OutputEstimator()
    assert est.expected("d", 64) == 64 and est.expected("d", None) == OutputEstimator.DEFAULT
    for n in [100, 120, 80, 110, 90] * 10:
        est.observe("d", n)
    assert 110 < est.expected("d", None) < 200


# -- through the router --------------------------------------------------------------------------

def report(router: ThreadedRouter, d: router_pb2.Decision, prompt: int, completion: int) -> None:
    router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                                prompt_tokens=prompt, completion_tokens=completion), timeout=5)


def test_reject_names_the_budget_and_frees_up_after_settling(budget_config, redis_url):
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_url) as router:
        first = router.stub.Route(chat("hello there", tenant="acme", max_tokens=100), timeout=5)
        second = router.stub.Route(chat("hello there", tenant="acme", max_tokens=100), timeout=5)
        assert first.budget.outcome == "admitted"
        [acme] = [s for s in second.budget.budgets if s.budget == "default/acme-tokens"]
        assert acme.request == 106 and acme.reserved == 212 and acme.limit == 250 and acme.unit == "total tokens"
        with pytest.raises(grpc.RpcError) as caught:
            router.stub.Route(chat("hello there", tenant="acme", max_tokens=100), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details() == (
            "budget default/acme-tokens is spent: 0 of 250 total tokens used and 212 reserved by requests in flight; "
            "this request needs about 106; it frees up as requests in flight settle")
        report(router, first, prompt=6, completion=10)
        third = router.stub.Route(chat("hello there", tenant="acme", max_tokens=100), timeout=5)
        [acme] = [s for s in third.budget.budgets if s.budget == "default/acme-tokens"]
        assert (acme.spent, acme.reserved, acme.remaining) == (16, 212, 22)
        text = router.metrics_text()
        assert 'switchpoint_budget_outcomes_total{budget="default/acme-tokens",outcome="rejected"} 1.0' in text
        assert 'switchpoint_budget_spent{budget="default/acme-tokens"} 16.0' in text


def test_downgrade_sends_the_request_to_the_cheaper_pool(budget_config, redis_url):
    prompt = "Please refactor this Python class so that it is easier to test"
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_url) as router:
        first = router.stub.Route(chat(prompt, tenant="globex", max_tokens=100), timeout=5)
        assert (first.pool, first.budget.outcome) == ("large-reasoning", "admitted")
        second = router.stub.Route(chat(prompt, tenant="globex", max_tokens=100), timeout=5)
        assert (second.decision, second.pool) == ("coding", "small-chat")
        assert second.budget.outcome == "downgraded" and second.budget.budget == "default/globex-spend"
        assert "downgraded to pool 'small-chat': budget default/globex-spend is spent" in second.reason
        assert second.replica.startswith("127.0.0.1:81") and second.prefill_replica == ""
        [spend] = [s for s in second.budget.budgets if s.budget == "default/globex-spend"]
        # at the cheaper pool's prices the request fits again: both reservations are held
        assert spend.unit == "USD" and spend.request == pytest.approx(0.2 * 117 / 1e6, rel=0.05)
        assert spend.reserved == pytest.approx(0.9 * 117 / 1e6 + spend.request, rel=0.05)


def test_observe_counts_but_never_refuses(budget_config, redis_url):
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_url) as router:
        for _ in range(3):
            d = router.stub.Route(chat("hello there", tenant="initech", max_tokens=100), timeout=5)
        assert d.budget.outcome == "observed" and d.budget.budget == "default/initech-watch"
        assert 'outcome="observed"' in router.metrics_text()


def test_budget_status_shows_spend_remaining_and_window_end(budget_config, redis_url):
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_url) as router:
        d = router.stub.Route(chat("hello there", tenant="acme", max_tokens=100), timeout=5)
        report(router, d, prompt=40, completion=60)
        status = router.stub.BudgetStatus(router_pb2.BudgetStatusRequest(tenant="acme"), timeout=5)
        assert status.ledger_reachable
        by_name = {s.budget: s for s in status.budgets}
        assert set(by_name) == {"default/acme-tokens", "default/globex-spend", "default/initech-watch",
                                "default/umbrella-guard", "default/per-tenant/acme"}
        acme = by_name["default/acme-tokens"]
        assert (acme.spent, acme.reserved, acme.remaining, acme.action) == (100, 0, 150, "Reject")
        assert acme.window_ends.endswith("Z")
        assert by_name["default/per-tenant/acme"].spent == 100


def test_when_redis_dies_failure_policy_decides_and_it_recovers_by_itself(budget_config, redis_server):
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_server.url) as router:
        assert router.stub.Route(chat("hi", tenant="umbrella"), timeout=5).budget.outcome == "admitted"
        redis_server.stop()
        open_d = router.stub.Route(chat("hi", tenant="acme", max_tokens=10), timeout=5)
        assert open_d.budget.outcome == "unenforced"
        with pytest.raises(grpc.RpcError) as caught:
            router.stub.Route(chat("hi", tenant="umbrella"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "budget default/umbrella-guard has failurePolicy Closed" in caught.value.details()
        report(router, open_d, 5, 5)  # settling while the ledger is down never fails the Report
        status = router.stub.BudgetStatus(router_pb2.BudgetStatusRequest(), timeout=5)
        assert not status.ledger_reachable
        redis_server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            d = router.stub.Route(chat("hi", tenant="acme", max_tokens=10), timeout=5)
            if d.budget.outcome == "admitted":
                break
            time.sleep(0.2)
        assert d.budget.outcome == "admitted"
        assert 'outcome="unenforced"' in router.metrics_text()


def test_without_a_ledger_budgets_follow_their_failure_policy(budget_config):
    with ThreadedRouter(config_paths=[budget_config]) as router:
        assert router.stub.Route(chat("hi", tenant="acme"), timeout=5).budget.outcome == "unenforced"
        with pytest.raises(grpc.RpcError) as caught:
            router.stub.Route(chat("hi", tenant="umbrella"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_requests_no_budget_applies_to_carry_no_budget_outcome(budget_config, redis_url):
    with ThreadedRouter(config_paths=[budget_config], redis_url=redis_url) as router:
        assert not router.stub.Route(chat("hi"), timeout=5).HasField("budget")


def test_budgets_yaml_with_a_policy_scope(tmp_path: Path, config_dir: Path):
    (config_dir / "budgets.yaml").write_text(textwrap.dedent("""
        apiVersion: switchpoint.dev/v1alpha1
        kind: Budget
        metadata: {name: whole-policy}
        spec:
          scope: {type: Policy, name: auto}
          window: {duration: 30d}
          limit: {amount: 100}
    """))
    [b] = load_config([config_dir]).budgets
    assert {i.budget.name for i in applicable((b,), Requester("default", "auto", "", "", {}))} == {"whole-policy"}
