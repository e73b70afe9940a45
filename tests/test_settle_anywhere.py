"""Settle anywhere, exactly once: a Report reaches any router replica and settles there (budget, cache, bandit).

Two real routers (gRPC on 127.0.0.1) share one real Redis and one settle key; Routes go to one, Reports to
the other (their scheduling peer channel is off: it is not what these tests are about). The ticket itself is
tested as the pure function it is: forged, altered, replayed for another request and expired tickets are
refused, naming the cause.
"""

from __future__ import annotations

import contextlib
import hmac
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.localredis import RedisServer
from switchpoint.router.refusals import InvalidRequest, NotFound
from switchpoint.router.tickets import Ticket, TicketBudget, TicketSigner, settle_key_from_env
from switchpoint.v1 import router_pb2
from tests.conftest import EXAMPLES, ThreadedRouter, chat, wait_for
from tests.test_cache_route import ANSWER, QUESTION, cached
from tests.test_selection_route import config as selection_config
from tests.test_selection_route import route as selection_route

KEY = "a-settle-key-shared-by-the-replicas"
BUDGET = """
apiVersion: switchpoint.dev/v1alpha1
kind: Budget
metadata: {name: per-tenant}
spec:
  scope: {type: EachTenant}
  window: {duration: 1h}
  limit: {tokens: 100000}
"""

TICKET = Ticket(request_id="r-1", expires_ms=2_000_000_000_000, policy="default/assistant", decision="chat",
                pool="small-chat", model="m", replica="127.0.0.1:8101", workload="chat/single/decode/cold",
                pricing=(0.5, 1.5, "USD"), budget=TicketBudget("abc:r-1", "admitted", (("default/acme", "", 600, ""),)),
                bandit=("global", "m"), cache=True)


# -- the ticket, pure ----------------------------------------------------------------------------------------------

def test_a_ticket_round_trips():
    signer = TicketSigner(KEY.encode())
    assert signer.open(signer.sign(TICKET), "r-1", now_ms=0) == TICKET


def test_a_ticket_from_a_router_before_leases_still_opens():
    """Budget lines of three fields (no lease) are what a router of the previous version signs: during a rolling
    upgrade their Reports reach new routers, which settle them as the reservations of their own they are."""
    raw = TICKET.as_list()
    raw[10][2] = [line[:3] for line in raw[10][2]]
    assert Ticket.from_list(raw).budget == TicketBudget("abc:r-1", "admitted", (("default/acme", "", 600, ""),))


@given(st.binary(min_size=16, max_size=200), st.text(st.characters(blacklist_categories=("Cs",)), max_size=600))
def test_the_signature_is_hmac_sha256_truncated(key: bytes, signed: str):
    """The signer's precomputed pads give RFC 2104's HMAC, for keys shorter and longer than SHA-256's block."""
    mac = hmac.digest(key, signed.encode(), "sha256")[:16]
    assert TicketSigner(key)._mac(signed) == mac


def _altered(token: str) -> str:
    version, payload, mac = token.split(".")
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    return f"{version}.{flipped}.{mac}"


@pytest.mark.parametrize(("make", "rid", "refusal", "fragment"), [
    (lambda t: _altered(t), "r-1", InvalidRequest, "signature does not verify"),
    (lambda t: t.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAA", "r-1", InvalidRequest, "signature does not verify"),
    (lambda t: TicketSigner(b"another-deployment-key").sign(TICKET), "r-1", InvalidRequest, "another settle key"),
    (lambda t: t, "r-2", InvalidRequest, "issued for request_id 'r-1', not 'r-2'"),
    (lambda t: "not a ticket", "r-1", InvalidRequest, "not a settlement ticket"),
    (lambda t: "2." + t[2:], "r-1", InvalidRequest, "not a settlement ticket"),
    (lambda t: TicketSigner(KEY.encode()).sign(Ticket("r-1", 1000, "", "d", "p", "m", "r")), "r-1", NotFound,
     "its ticket expired"),
])
def test_bad_tickets_are_refused_naming_the_cause(make, rid, refusal, fragment):
    signer = TicketSigner(KEY.encode())
    with pytest.raises(refusal) as err:
        signer.open(make(signer.sign(TICKET)), rid)
    assert fragment in err.value.message


@pytest.mark.parametrize(("env", "result"), [
    ({}, None),
    ({"SWITCHPOINT_SETTLE_KEY": KEY}, KEY.encode()),
    ({"SWITCHPOINT_SETTLE_KEY": "short"}, "at least 16 bytes"),
    ({"SWITCHPOINT_SETTLE_KEY_FILE": "/nonexistent/key"}, "cannot read /nonexistent/key"),
])
def test_the_settle_key_comes_from_the_environment(env, result):
    if isinstance(result, str):
        with pytest.raises(ValueError, match=result):
            settle_key_from_env(env)
    else:
        assert settle_key_from_env(env) == result


def test_the_settle_key_may_be_a_file(tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    assert settle_key_from_env({"SWITCHPOINT_SETTLE_KEY_FILE": str(tmp_path / "key")}) == KEY.encode()


# -- two routers, one Redis ----------------------------------------------------------------------------------------
# A pair of routers serves every test of a module-scoped fixture; each test has a tenant of its own (the budget
# is EachTenant), so their spend never mixes. These tests read each request's own reservation in the ledger, so the
# routers reserve per request (no budget leases: tests/test_budget_leases.py settles lease-admitted requests anywhere).

@contextlib.contextmanager
def routers(config, redis_url: str, **kwargs) -> Iterator[tuple[ThreadedRouter, ThreadedRouter]]:
    kwargs.setdefault("budget_leases", False)
    with ThreadedRouter(config_paths=[config], redis_url=redis_url, peer_channel=None, **kwargs) as a, \
            ThreadedRouter(config_paths=[config], redis_url=redis_url, peer_channel=None, **kwargs) as b:
        yield a, b


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory) -> Iterator[str]:
    with RedisServer(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server.url


@pytest.fixture(scope="module")
def budget_config(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("config") / "config"
    shutil.copytree(EXAMPLES, target)
    (target / "budgets.yaml").write_text(BUDGET)
    return target


@contextlib.contextmanager
def keyed_pair(config: Path, redis_url: str, **kwargs) -> Iterator[tuple[ThreadedRouter, ThreadedRouter]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWITCHPOINT_SETTLE_KEY", KEY)
        with routers(config, redis_url, **kwargs) as pair:
            yield pair


@pytest.fixture(scope="module")
def pair(budget_config, shared_redis) -> Iterator[tuple[ThreadedRouter, ThreadedRouter]]:
    with keyed_pair(budget_config, shared_redis) as routed:
        yield routed


@pytest.fixture(scope="module")
def short_pair(budget_config, shared_redis) -> Iterator[tuple[ThreadedRouter, ThreadedRouter]]:
    """In-flight TTL 1 s: tickets expire after 1 s, reservations after 2 s."""
    with keyed_pair(budget_config, shared_redis, inflight_ttl_s=1.0) as routed:
        yield routed


def report(stub, d: router_pb2.Decision, ticket: str | None = None, **fields) -> router_pb2.ReportResponse:
    fields.setdefault("outcome", router_pb2.OUTCOME_SUCCESS)
    return stub.Report(router_pb2.ReportRequest(request_id=d.request_id, ticket=d.ticket if ticket is None else ticket,
                                                **fields), timeout=10)


def standing(r: ThreadedRouter, tenant: str) -> tuple[float, float]:
    s = r.stub.BudgetStatus(router_pb2.BudgetStatusRequest(tenant=tenant), timeout=10)
    return next((b.spent, b.reserved) for b in s.budgets if b.budget == f"default/per-tenant/{tenant}")


def route(r: ThreadedRouter, tenant: str, text: str = "hello there") -> router_pb2.Decision:
    return r.stub.Route(chat(text, tenant=tenant, max_tokens=50), timeout=10)


def test_a_report_settles_on_the_other_replica_exactly_once(pair):
    a, b = pair
    d = route(a, "t-other")
    assert d.ticket and d.headers["x-switchpoint-ticket"] == d.ticket and d.budget.outcome == "admitted"
    assert standing(b, "t-other")[1] > 0
    settled = report(b.stub, d, prompt_tokens=7, completion_tokens=30)
    assert (settled.decision, settled.pool, settled.duplicate) == (d.decision, d.pool, False)
    assert standing(b, "t-other") == (37, 0)
    # again, on either replica, with or without the reservation's router knowing: nothing counts twice
    assert report(a.stub, d, prompt_tokens=7, completion_tokens=30).duplicate
    assert report(b.stub, d, prompt_tokens=900, completion_tokens=900).duplicate
    assert standing(a, "t-other") == (37, 0)
    assert 'outcome="duplicate"' in a.metrics_text() and 'outcome="success"' in b.metrics_text()


def test_a_report_on_the_routing_replica_still_counts_once(pair):
    a, b = pair
    d = route(a, "t-here")
    assert not report(a.stub, d, prompt_tokens=5, completion_tokens=5).duplicate
    assert report(b.stub, d, prompt_tokens=5, completion_tokens=5).duplicate
    assert standing(b, "t-here") == (10, 0)


@pytest.mark.parametrize(("ticket", "code", "fragment"), [
    ("", grpc.StatusCode.NOT_FOUND, "send the Decision's ticket"),
    ("ALTER", grpc.StatusCode.INVALID_ARGUMENT, "signature does not verify"),
    ("OTHER", grpc.StatusCode.INVALID_ARGUMENT, "a ticket settles only its own request"),
])
def test_bad_reports_elsewhere_are_refused_and_count_nothing(pair, ticket, code, fragment):
    a, b = pair
    tenant = f"t-bad-{ticket or 'none'}"
    d, other = route(a, tenant), route(a, tenant, "hello again")
    sent = {"ALTER": _altered(d.ticket), "OTHER": other.ticket}.get(ticket, ticket)
    with pytest.raises(grpc.RpcError) as err:
        report(b.stub, d, ticket=sent, prompt_tokens=7, completion_tokens=30)
    assert err.value.code() == code and fragment in err.value.details()
    assert standing(b, tenant) == (0, d.budget.budgets[0].request + other.budget.budgets[0].request)
    assert not report(b.stub, d, prompt_tokens=7, completion_tokens=30).duplicate  # the real one still settles
    assert standing(b, tenant) == (37, other.budget.budgets[0].request)


def test_a_report_after_expiry_is_refused_and_the_ledger_charges_the_reservation_once(short_pair):
    a, b = short_pair
    d = route(a, "t-late")
    time.sleep(1.05)  # past the ticket's expiry
    with pytest.raises(grpc.RpcError) as err:
        report(b.stub, d, prompt_tokens=7, completion_tokens=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "its ticket expired" in err.value.details()
    # the late Report counted nothing (its 37 tokens): the reservation is still held, or already charged in full at
    # its expiry (the TTL + min(60 s, TTL): 2 s here), and it is charged exactly once
    reserved = d.budget.budgets[0].request
    assert standing(b, "t-late") in ((0, reserved), (reserved, 0))
    assert wait_for(lambda: standing(b, "t-late") == (reserved, 0), timeout=5)


def test_the_routing_replica_releases_its_load_when_the_report_lands_elsewhere(short_pair):
    a, b = short_pair
    d = route(a, "t-load")
    report(b.stub, d, prompt_tokens=7, completion_tokens=30)
    assert a.server.ledger.load(d.replica) >= 1 and b.server.ledger.load(d.replica) == 0
    assert wait_for(lambda: a.server.ledger.load(d.replica) == 0, timeout=5)  # its in-flight TTL
    assert standing(a, "t-load") == (37, 0)


def test_without_a_shared_key_a_report_settles_only_where_it_was_routed(budget_config, redis_url, monkeypatch):
    monkeypatch.delenv("SWITCHPOINT_SETTLE_KEY", raising=False)
    with routers(budget_config, redis_url) as (a, b):
        d = a.stub.Route(chat("hello there", tenant="acme", max_tokens=50), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            report(b.stub, d)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "another settle key" in err.value.details()
        assert not report(a.stub, d).duplicate


def test_the_cache_stores_an_answer_reported_to_the_other_replica(redis_url, monkeypatch):
    monkeypatch.setenv("SWITCHPOINT_SETTLE_KEY", KEY)
    with routers(EXAMPLES, redis_url) as (a, b):
        d = a.stub.Route(chat(QUESTION, model="smart", tenant="acme"), timeout=10)
        assert d.cache == "miss"
        time.sleep(0.2)  # the hand-off is written behind the Route
        report(b.stub, d, prompt_tokens=12, completion_tokens=14, response=ANSWER)
        hit = cached(a, QUESTION, tenant="acme")
        assert hit is not None and hit.cached.content == ANSWER and hit.cached.tier == "exact"
        assert 'switchpoint_cache_writes_total{result="stored"} 1.0' in b.metrics_text()


def test_the_bandit_learns_from_reports_on_the_other_replica(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("SWITCHPOINT_SETTLE_KEY", KEY)
    cfg = selection_config(tmp_path, "{algorithm: bandit, exploration: 0.3}")
    with routers(cfg, redis_url) as (a, b):
        for _ in range(60):  # routed by a, rated on b: the weak pool's answers bad, the strong pool's good
            d = selection_route(a, "hello")
            report(b.stub, d, quality=1.0 if d.pool == "strong" else 0.0)
        time.sleep(2.5)  # both routers sync their counts every second
        picks = [selection_route(a, "hello").pool for _ in range(30)]
    assert picks.count("strong") >= 25


def test_an_observer_stream_on_the_other_replica_settles_with_the_ticket_header(budget_config, shared_redis):
    """The gateway's observability stream (its second ext_proc filter) may reach another router than the one that
    routed: it sees the routed request's headers, the ticket among them, and settles at the end of the response."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWITCHPOINT_SETTLE_KEY", KEY)
        with ThreadedRouter(config_paths=[budget_config], redis_url=shared_redis, peer_channel=None) as a, \
                ThreadedRouter(config_paths=[budget_config], redis_url=shared_redis, peer_channel=None,
                               extproc_port=0) as b:
            d = route(a, "t-observer")

            def headers(**pairs: str) -> ep.HttpHeaders:
                return ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
                    base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]))

            body = b'{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], ' \
                   b'"usage": {"prompt_tokens": 9, "completion_tokens": 11}}'
            stream = [
                ep.ProcessingRequest(observability_mode=True, request_headers=headers(**{
                    ":path": "/v1/chat/completions", "x-switchpoint-request-id": d.request_id,
                    "x-gateway-destination-endpoint": d.replica, "x-switchpoint-ticket": d.headers[
                        "x-switchpoint-ticket"]})),
                ep.ProcessingRequest(observability_mode=True, response_headers=headers(**{
                    ":status": "200", "content-type": "application/json"})),
                ep.ProcessingRequest(observability_mode=True,
                                     response_body=ep.HttpBody(body=body, end_of_stream=True)),
            ]
            with grpc.insecure_channel(f"127.0.0.1:{b.server.extproc_port}") as channel:
                assert list(ep_grpc.ExternalProcessorStub(channel).Process(iter(stream), timeout=10)) == []
            assert wait_for(lambda: standing(a, "t-observer") == (20, 0), timeout=5)
            assert report(a.stub, d).duplicate  # settled once, by B's stream


def test_the_cache_hand_off_round_trips_and_a_broken_one_stores_nothing():
    import numpy as np

    from switchpoint.router.cache import CacheOptions, Conversation
    from switchpoint.router.caching import CacheWrite
    from switchpoint.router.handoff import decode_write, encode_write
    from tests.test_cache import scope

    write = CacheWrite(scope(), Conversation("user\x1fhi", "hi"), np.arange(4, dtype=np.float32),
                       CacheOptions(ttl_s=60.0), "general")
    back = decode_write(encode_write(write))
    assert back is not None and back.embedding is not None
    assert (back.scope, back.conversation, back.options, back.decision) == (write.scope, write.conversation,
                                                                            write.options, write.decision)
    assert back.embedding.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert decode_write(b'{"s": {}}') is None


def test_without_redis_a_request_settles_once_in_this_process():
    import asyncio

    from switchpoint.router.handoff import Handoff

    handoff = Handoff(TicketSigner.ephemeral())
    assert asyncio.run(handoff.first("r-1", False)) == (True, None)
    assert asyncio.run(handoff.first("r-1", False)) == (False, None)
    assert asyncio.run(handoff.first("r-2", False)) == (True, None)
