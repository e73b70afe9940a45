"""gRPC over HTTP/2 served on the event loop itself (h2's protocol state machine), for the ext_proc port.

Why not grpcio here: grpc.aio hands every event from gRPC core's threads to the event loop through a poller thread
and a socket pair, so each message of an ext_proc stream costs thread hops; on a small VM, where waking another
vCPU costs ~0.35 ms, a minimal grpc.aio ext_proc that only answers CONTINUE added 1.1-1.9 ms to a request through
Envoy. This server parses and writes HTTP/2 frames in the loop's own thread, with no hop at all. It serves what an
Envoy ext_proc cluster (and a Kubernetes gRPC probe) asks of that port: bidirectional-streaming and unary methods,
messages framed as gRPC's length-prefixed protobufs (uncompressed: Envoy's gRPC client does not compress), status in
trailers, HTTP/2 flow control both ways, GOAWAY on stop. The router's own API stays on grpcio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

log = logging.getLogger("switchpoint.router.h2grpc")

WINDOW = 1 << 24  # bytes Envoy may send ahead on the connection and on each stream
HEADER = 5  # a gRPC message's prefix: compressed flag, 4-byte big-endian length
RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]


class GrpcError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


class Context:
    """The part of grpc.aio's ServicerContext the handlers here use."""

    def __init__(self, headers: dict[bytes, bytes] | None = None):
        self._headers = headers or {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The call's request headers but the pseudo-headers, as (key, value) pairs (what Envoy's
        `grpc_service.initial_metadata` adds arrives here); decoded when a handler asks."""
        return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in self._headers.items() if k[:1] != b":")

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise GrpcError(code, details)


@dataclass(frozen=True)
class Method:
    request: Any  # the protobuf message class of the requests
    handler: Callable[..., Any]  # streaming: (requests, context) -> async iterator; unary: async (request, context)
    streaming: bool


class H2GrpcServer:
    def __init__(self, methods: dict[str, Method], max_message_bytes: int):
        self.methods = methods  # by path: /package.Service/Method
        self.max_message_bytes = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (an OSError names an address in use)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float) -> None:
        """No new connections; GOAWAY to each client, streams in flight get `grace` seconds, then connections close."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.go_away()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.streams for c in self._connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()


class _Stream:
    def __init__(self, conn: _Connection, stream_id: int, method: Method, headers: dict[bytes, bytes]):
        self.conn = conn
        self.id = stream_id
        self.method = method
        self.headers = headers  # the call's request headers
        self.pending = bytearray()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.headers_sent = False
        self.error: GrpcError | None = None

    def feed(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= HEADER:
            if self.pending[0]:
                self.error = GrpcError(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not accepted")
            size = int.from_bytes(self.pending[1:HEADER], "big")
            limit = self.conn.server.max_message_bytes
            if size > limit:
                self.error = GrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"message of {size} bytes over the limit of {limit}")
            if self.error is not None:
                self.pending.clear()
                self.inbox.put_nowait(None)
                return
            if len(self.pending) < HEADER + size:
                return
            self.inbox.put_nowait(bytes(self.pending[HEADER:HEADER + size]))
            del self.pending[:HEADER + size]

    async def requests(self) -> AsyncIterator[Any]:
        parse = self.method.request.FromString
        while True:
            raw = await self.inbox.get()
            if raw is None:
                if self.error is not None:
                    raise self.error
                return
            yield parse(raw)

    async def run(self) -> None:
        context = Context(self.headers)
        try:
            if self.method.streaming:
                async for answer in self.method.handler(self.requests(), context):
                    await self.send(answer)
            else:
                raw = await self.inbox.get()
                if raw is None:
                    raise self.error or GrpcError(grpc.StatusCode.INTERNAL, "a unary call without its request message")
                await self.send(await self.method.handler(self.method.request.FromString(raw), context))
            self.conn.end(self, grpc.StatusCode.OK, "")
        except GrpcError as exc:
            self.conn.end(self, exc.code, exc.message)
        except asyncio.CancelledError:
            return  # the client reset the stream or went away: nothing more to send
        except Exception as exc:
            log.exception("gRPC handler failed")
            self.conn.end(self, grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")

    async def send(self, message: Any) -> None:
        data = message.SerializeToString()
        await self.conn.write(self, len(data).to_bytes(HEADER, "big") + data)


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2GrpcServer):
        self.server = server
        # What a peer sends is validated (RFC 9113's malformed-request rules); what this server sends is not: its
        # headers are its own few, already lower-case and free of connection-specific fields, and checking them is a
        # tenth of the HTTP/2 framing's time (py-spy, bench gateway)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self._window_open = asyncio.Event()
        self._draining = False  # the client sent GOAWAY: its open streams finish, then the connection closes
        self._writable = asyncio.Event()  # cleared while the transport's buffer is over its high-water mark
        self._writable.set()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10_000,
        })
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW - 65_535)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("ext_proc client broke HTTP/2 (%s): connection closed", exc)
            self._flush()
            self.abort()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def pause_writing(self) -> None:
        """The client stopped reading and the socket's buffer filled: handlers wait before sending more."""
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        for stream in list(self.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self._window_open.set()  # writers waiting for a window or a buffer learn the connection is gone
        self._writable.set()

    # -- events ----------------------------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.feed(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.inbox.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
            self._close_if_drained()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # Envoy drains a connection with GOAWAY (NO_ERROR): the streams in flight still finish. h2 closes its
            # connection state machine on any GOAWAY received, which would refuse their answers (RFC 9113 6.8 lets
            # them finish), so it is reopened; the connection closes once they are done.
            self._draining = True
            if event.error_code:
                self.abort()
            else:
                self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
            self._close_if_drained()

    def _request(self, event: h2.events.RequestReceived) -> None:
        headers = {bytes(k): bytes(v) for k, v in event.headers or ()}
        path = headers.get(b":path", b"").decode("latin-1")
        method = self.server.methods.get(path)
        if method is None or headers.get(b":method") != b"POST":
            self.h2.send_headers(event.stream_id, [*RESPONSE_HEADERS, *_status(grpc.StatusCode.UNIMPLEMENTED,
                                                                                 f"unknown method {path}")],
                                 end_stream=True)
            return
        stream = _Stream(self, event.stream_id, method, headers)
        self.streams[event.stream_id] = stream
        stream.task = asyncio.get_running_loop().create_task(stream.run())

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, stream: _Stream, frame: bytes) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        self._headers(stream)
        view = memoryview(frame)
        while view:
            if stream.id not in self.streams or self.transport is None or self.transport.is_closing():
                raise asyncio.CancelledError  # reset by the client, or the connection is gone
            room = min(self.h2.local_flow_control_window(stream.id), self.h2.max_outbound_frame_size)
            if room <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                continue
            try:
                self.h2.send_data(stream.id, view[:room].tobytes())
            except h2.exceptions.ProtocolError:
                raise asyncio.CancelledError from None  # the stream or the connection closed under us
            view = view[room:]
            self._flush()

    def end(self, stream: _Stream, code: grpc.StatusCode, message: str) -> None:
        """Trailers with the call's status (a trailers-only response when nothing was sent), and the stream is done."""
        if self.streams.pop(stream.id, None) is None:
            return
        status = _status(code, message)
        try:
            self.h2.send_headers(stream.id, status if stream.headers_sent else [*RESPONSE_HEADERS, *status],
                                 end_stream=True)
        except h2.exceptions.ProtocolError:  # the stream or the connection closed under us
            return
        self._flush()
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self._draining and not self.streams:
            self.abort()

    def _headers(self, stream: _Stream) -> None:
        if not stream.headers_sent:
            self.h2.send_headers(stream.id, RESPONSE_HEADERS)
            stream.headers_sent = True

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def go_away(self) -> None:
        """A graceful GOAWAY: no new streams, those open finish. Written as a frame of its own, because h2's
        close_connection() also closes its state machine to the open streams' remaining frames."""
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            frame = hyperframe.frame.GoAwayFrame(0)
            frame.last_stream_id = self.h2.highest_inbound_stream_id
            self.transport.write(frame.serialize())

    def close(self) -> None:
        """The final GOAWAY, then the connection closes."""
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed by the client
            self.h2.close_connection()
        self._flush()
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _status(code: grpc.StatusCode, message: str) -> list[tuple[bytes, bytes]]:
    status = [(b"grpc-status", str(code.value[0]).encode())]
    return [*status, (b"grpc-message", _percent(message))] if message else status


def _percent(message: str) -> bytes:
    """grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2): printable ASCII but '%' as it is, the rest escaped."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        out += bytes([byte]) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}".encode()
    return bytes(out)

