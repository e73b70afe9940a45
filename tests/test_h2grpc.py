"""The ext_proc port's gRPC server (router/frontdoors/h2grpc.py) against grpcio's own client: streams, unary calls,
flow control with messages larger than a window, status codes, cancellation and a graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from switchpoint.router.frontdoors.h2grpc import H2GrpcServer, Method

Request, Reply = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
ECHO, BIG, FAIL, HEALTH = "/test.Echo/Stream", "/test.Echo/Big", "/test.Echo/Fail", "/grpc.health.v1.Health/Check"
BIG_ANSWER = Request(service="y" * (3 << 20))
LIMIT = 4 << 20


class Served:
    """The server on its own event loop thread, as the router runs it; handlers record what they saw."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cancelled = threading.Event()
        self.answered = 0  # answers the echo handler has produced
        self.health = HealthServicer()
        self.server = H2GrpcServer({
            ECHO: Method(Request, self.echo, streaming=True),
            BIG: Method(Request, self.big, streaming=True),
            FAIL: Method(Request, self.fail, streaming=True),
            HEALTH: Method(Request, self.health.Check, streaming=False),
        }, max_message_bytes=LIMIT)

    async def echo(self, requests, context):  # type: ignore[no-untyped-def]
        """One answer per request, the service name echoed (and as long)."""
        try:
            async for request in requests:
                if request.service == "slow":
                    await asyncio.sleep(0.3)
                if request.service == "metadata":  # the call's own metadata, as the handler sees it
                    request = Request(service=";".join(f"{k}={v}" for k, v in context.invocation_metadata()
                                                       if k.startswith("x-")))
                self.answered += 1
                yield Reply(status=Reply.SERVING) if request.service == "slow" else Request(service=request.service)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def big(self, requests, context):  # type: ignore[no-untyped-def]
        """A 3 MB answer to each request."""
        async for _ in requests:
            self.answered += 1
            yield BIG_ANSWER

    async def fail(self, requests, context):  # type: ignore[no-untyped-def]
        async for _ in requests:
            raise ValueError("the handler broke")
        yield Reply()

    def call(self, coro, timeout: float = 10):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture
def served() -> Iterator[tuple[Served, grpc.Channel]]:
    s = Served()
    s.thread.start()
    port = s.call(s.server.start("127.0.0.1", 0))
    s.call(s.health.set("", Reply.SERVING))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", LIMIT)])
    try:
        yield s, channel
    finally:
        channel.close()
        s.call(s.server.stop(1.0))
        s.loop.call_soon_threadsafe(s.loop.stop)
        s.thread.join(5)


def _stream(channel: grpc.Channel, path: str = ECHO):  # type: ignore[no-untyped-def]
    return channel.stream_stream(path, request_serializer=Request.SerializeToString,
                                 response_deserializer=Request.FromString)


def test_a_stream_answers_each_message_in_order_and_ends_ok(served):
    _, channel = served
    call = _stream(channel)(iter([Request(service=f"m{i}") for i in range(5)]), timeout=5)
    assert [r.service for r in call] == [f"m{i}" for i in range(5)]
    assert call.code() == grpc.StatusCode.OK


def test_the_calls_metadata_reaches_the_handler_without_the_pseudo_headers(served):
    _, channel = served
    call = _stream(channel)(iter([Request(service="metadata")]), timeout=5,
                            metadata=(("x-switchpoint-extproc-phases", "request"), ("x-other", "two")))
    [answer] = list(call)
    assert answer.service == "x-switchpoint-extproc-phases=request;x-other=two"


def test_messages_larger_than_the_flow_control_windows_go_both_ways(served):
    """3 MB each way: over grpcio's 64 KiB stream window, so the server waits for WINDOW_UPDATEs to send."""
    _, channel = served
    big = "x" * (3 << 20)
    [answer] = list(_stream(channel)(iter([Request(service=big)]), timeout=10))
    assert answer.service == big


def test_unary_health_checks_answer_as_grpcs_own_health_service(served):
    _, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(Request(service=""), timeout=5).status == Reply.SERVING
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(Request(service="no-such-service"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("path", "message", "code", "fragment"), [
    ("/test.Echo/Nothing", "hi", grpc.StatusCode.UNIMPLEMENTED, "unknown method /test.Echo/Nothing"),
    (ECHO, "x" * (LIMIT + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, f"over the limit of {LIMIT}"),
    (FAIL, "hi", grpc.StatusCode.UNKNOWN, "ValueError: the handler broke"),
])
def test_refusals_and_failures_end_the_call_with_a_status_that_names_the_cause(served, path, message, code, fragment):
    _, channel = served
    with pytest.raises(grpc.RpcError) as err:
        list(_stream(channel, path)(iter([Request(service=message)]), timeout=5))
    assert err.value.code() == code and fragment in (err.value.details() or "")


def test_a_client_that_cancels_mid_stream_cancels_the_handler(served):
    s, channel = served
    call = _stream(channel)(iter([Request(service="first"), Request(service="slow")]), timeout=5)
    assert next(call).service == "first"
    call.cancel()
    assert s.cancelled.wait(5)


def test_a_stop_lets_a_call_in_flight_finish_and_refuses_new_connections(served):
    s, channel = served
    call = _stream(channel)(iter([Request(service="first"), Request(service="slow")]), timeout=5)
    assert next(call).service == "first"  # the call is in flight
    stopping = asyncio.run_coroutine_threadsafe(s.server.stop(2.0), s.loop)
    assert [r.service for r in call] == [""]  # the slow answer (a Reply read as a Request: no service)
    stopping.result(5)
    with pytest.raises(grpc.RpcError) as err:
        list(_stream(grpc.insecure_channel(f"127.0.0.1:{s.server.port}"))(iter([Request(service="late")]), timeout=2))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_goaway_lets_its_streams_in_flight_finish(served):
    """Envoy drains an upstream connection with GOAWAY (NO_ERROR) and expects the streams already open to be answered
    (RFC 9113, 6.8). A raw HTTP/2 client: a slow call, then GOAWAY, then the answer and an OK status still arrive."""
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import hyperframe.frame

    s, _ = served
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", ECHO.encode()),
                            (b":authority", b"test"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    body = Request(service="slow").SerializeToString()
    client.send_data(1, len(body).to_bytes(5, "big") + body, end_stream=True)
    goaway = hyperframe.frame.GoAwayFrame(0)
    goaway.last_stream_id = 0  # the client opened no server push: NO_ERROR, nothing of ours to refuse
    with socket.create_connection(("127.0.0.1", s.server.port), timeout=5) as sock:
        sock.sendall(client.data_to_send() + goaway.serialize())
        events: list = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            data = sock.recv(65_536)
            assert data, f"the server closed the connection before answering: {events}"
            events += client.receive_data(data)
    answer = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    trailers = dict(next(e.headers for e in events if isinstance(e, h2.events.TrailersReceived)))
    assert Reply.FromString(answer[5:]).status == Reply.SERVING and trailers[b"grpc-status"] == b"0"


def _raw_client(path: str):  # type: ignore[no-untyped-def]
    """An HTTP/2 client that lets the server send as much as it likes (the largest windows): what bounds the
    server's writes is then only the socket, not flow control."""
    import h2.config
    import h2.connection
    import h2.settings

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.increment_flow_control_window(2**31 - 1 - 65_535)
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                            (b":authority", b"test"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    return client


def test_a_client_that_stops_reading_holds_the_handler_back_and_loses_nothing(served):
    """Ten 3 MB answers to a client that reads none of them for a while: the handler waits for the socket instead of
    piling the answers up in the process; once the client reads, all ten arrive."""
    import socket

    import h2.events

    s, _ = served
    client = _raw_client(BIG)
    small = Request(service="more").SerializeToString()
    big = BIG_ANSWER.SerializeToString()
    with socket.create_connection(("127.0.0.1", s.server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        for i in range(10):
            client.send_data(1, len(small).to_bytes(5, "big") + small, end_stream=i == 9)
        sock.sendall(client.data_to_send())
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and s.answered < 10:
            time.sleep(0.05)
        held = s.answered
        answers, ended = 0, False
        while not ended:
            data = sock.recv(1 << 20)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    answers += len(event.data)
                ended = ended or isinstance(event, h2.events.StreamEnded)
    assert held <= 4, f"{held} answers produced while the client read nothing"
    assert answers == 10 * (5 + len(big))
