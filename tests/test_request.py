"""Route request validation (plain data, and as the gRPC front door translates it) and lenient decoding: every bad
input has a message that names the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.router.frontdoors.grpc_router import route_input_from as parse_route_request
from switchpoint.router.request import ChatTurn, InvalidRequest, RequestLimits, Sampling, route_input
from switchpoint.router.wire import MalformedRequest, lenient_deserializer
from switchpoint.v1 import router_pb2

LIMITS = RequestLimits(max_prompt_bytes=1000, max_messages=5, max_metadata_entries=2, max_metadata_bytes=100)


def msg(*turns: tuple[str, str], **fields) -> router_pb2.RouteRequest:
    fields.setdefault("model", "auto")
    return router_pb2.RouteRequest(messages=[router_pb2.ChatMessage(role=r, content=c) for r, c in turns], **fields)


BAD = [
    ("no model", msg(("user", "hi"), model=""), "model: required"),
    ("no messages", msg(), "messages: at least one message is required"),
    ("unknown role", msg(("user", "hi"), ("robot", "beep")), "messages[1].role: unknown role 'robot'"),
    ("empty role", msg(("", "hi")), "messages[0].role: unknown role ''"),
    ("too many messages", msg(*[("user", "x")] * 6), "messages: 6 messages; the limit is 5"),
    ("prompt over the byte limit", msg(("user", "é" * 501)), "messages: 1,002 bytes of content; the limit is 1,000"),
    ("too many headers", msg(("user", "hi"), metadata={"a": "1", "b": "2", "c": "3"}), "metadata: 3 entries"),
    ("headers too large", msg(("user", "hi"), metadata={"a": "x" * 200}), "metadata: 201 characters"),
    ("tenant too long", msg(("user", "hi"), tenant="t" * 300), "tenant: 300 characters"),
    ("temperature out of range", msg(("user", "hi"), sampling=router_pb2.Sampling(temperature=3)),
     "sampling.temperature: 3.0 is outside [0, 2]"),
    ("top_p out of range", msg(("user", "hi"), sampling=router_pb2.Sampling(top_p=-0.1)), "sampling.top_p: -0.1"),
    ("too many stop sequences", msg(("user", "hi"), sampling=router_pb2.Sampling(stop=["x"] * 17)),
     "sampling.stop: 17 sequences; the limit is 16"),
    ("tools too large", msg(("user", "hi"), tools_json="[" + " " * (1 << 20) + "]"),
     "tools_json: 1,048,578 characters"),
]


@pytest.mark.parametrize(("what", "request_msg", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_refused_with_the_field_named(what, request_msg, fragment):
    with pytest.raises(InvalidRequest) as caught:
        parse_route_request(request_msg, LIMITS)
    assert fragment in str(caught.value)


def test_a_valid_request_keeps_everything_the_signals_need():
    req = parse_route_request(msg(("system", "be brief"), ("user", "hello"), ("assistant", "hi"), ("user", "again"),
                                  metadata={"X-Priority": "high"}, tenant="acme", max_tokens=50), LIMITS)
    assert req.last_user_text == "again"
    assert req.user_turns == 2
    assert req.metadata == {"x-priority": "high"}  # header names are matched lower-cased
    assert req.context_tokens == req.input_tokens + 50
    assert len(req.request_id) == 24


@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant", "tool", "developer"]),
                          st.text(max_size=60)), min_size=1, max_size=5))
def test_any_well_formed_request_parses(turns):
    req = parse_route_request(msg(*turns), RequestLimits())
    assert [t.content for t in req.messages] == [c for _, c in turns]
    assert req.input_tokens >= 4 * len(turns)


NON_UTF8 = b"\xff\xfe"


@pytest.mark.parametrize(("build", "field"), [
    (lambda: msg(("user", "XXXX")), "messages[0].content"),
    (lambda: msg(("user", "ok"), ("user", "XXXX")), "messages[1].content"),
    (lambda: msg(("user", "ok"), model="XXXX"), "model"),
    (lambda: msg(("user", "ok"), metadata={"k": "XXXX"}), "metadata.value"),
    (lambda: msg(("user", "ok"), tenant="XXXX"), "tenant"),
])
def test_non_utf8_text_is_named_not_crashed_on(build, field):
    data = build().SerializeToString().replace(b"XXXX", NON_UTF8 + b"XX")
    decoded = lenient_deserializer(router_pb2.RouteRequest)(data)
    assert decoded == MalformedRequest(f"{field}: not valid UTF-8")


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(data):
    decoded = lenient_deserializer(router_pb2.RouteRequest)(data)
    assert isinstance(decoded, router_pb2.RouteRequest | MalformedRequest)


PLAIN_BAD = [
    ("negative max_tokens", {"max_tokens": -1}, "max_tokens: must be a positive number"),
    ("request id too long", {"request_id": "r" * 300}, "request_id: 300 characters"),
    ("seed and bad temperature", {"sampling": Sampling(seed=1, temperature=2.5)}, "sampling.temperature: 2.5"),
    ("stop sequence too long", {"sampling": Sampling(stop=("x" * 70_000,))}, "sampling.stop[0]: 70,000 characters"),
]


@pytest.mark.parametrize(("what", "fields", "fragment"), PLAIN_BAD, ids=[b[0] for b in PLAIN_BAD])
def test_route_input_refuses_what_any_front_door_sends_wrong(what, fields, fragment):
    with pytest.raises(InvalidRequest) as caught:
        route_input(model="auto", messages=[ChatTurn("user", "hi")], limits=LIMITS, **fields)
    assert fragment in str(caught.value)


def test_the_grpc_translation_and_the_plain_input_agree():
    proto = parse_route_request(msg(("user", "hello"), sampling=router_pb2.Sampling(temperature=0.0, stop=["\n"]),
                                    tenant="acme", request_id="r1"), LIMITS)
    plain = route_input(model="auto", messages=[ChatTurn("user", "hello")], limits=LIMITS, tenant="acme",
                        request_id="r1", sampling=Sampling(temperature=0.0, stop=("\n",)))
    assert proto == plain
