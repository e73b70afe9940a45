"""One pipelined Redis connection for the calls on the request path: the budget ledger's script.

Every budgeted Route waits on one ledger script call. Through redis-py's asyncio client that call costs
~250-350 µs of the router's CPU before and after Redis's own ~100 µs (pool checkout and release, retry and
timeout wrappers, command packing, observability hooks: measured with py-spy in `switchpoint bench
budgets`). This module does only what that call needs: one connection per user of it (the ledger, the
cache's lookups, the peer channel's publishes) to a single Redis server, commands written as they come (so
concurrent Routes share it, pipelined, instead of each taking a pooled connection), replies parsed by
hiredis and matched to callers in order, as Redis answers a connection's commands in order.

What it guarantees, and what it leaves to redis-py:
- errors are redis-py's exception types (ConnectionError, TimeoutError, ResponseError: all RedisError), so
  callers' failure handling does not change; a call that times out fails alone, and its late reply is
  still consumed in order; a lost connection fails every call waiting on it, and the next call reconnects
  (one attempt at a time, which outlives a call that stops waiting for it: `_connect`);
- a script is called by EVALSHA and, when the server answers NOSCRIPT (restarted, flushed), by EVAL, which
  loads it again;
- plain `redis://` URLs (host, port, db, user, password). Redis Cluster (slot routing, MOVED) and TLS or
  unix-socket URLs keep redis-py's clients: `for_url` returns None for them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float
CONNECT_TIMEOUT_S = 2.0  # a connection attempt's own bound (a call waits for it at most its own timeout)


def pack(args: Sequence[Arg]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, address: str) -> None:
        self.address = address
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.waiting: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            reply = self.reader.gets()
            if reply is False:  # an incomplete reply: wait for more bytes
                return
            future = self.waiting.popleft()
            if not future.done():  # a timed-out caller's reply is consumed and dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to Redis at {self.address} lost"
                                         + (f": {exc}" if exc else ""))
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def send(self, data: bytes, future: asyncio.Future) -> None:
        assert self.transport is not None
        self.waiting.append(future)
        self.transport.write(data)


class PipelinedConnection:
    """Calls to one Redis server over one connection, pipelined; reconnects on the next call after a loss."""

    def __init__(self, host: str, port: int, *, timeout_s: float, db: int = 0, username: str | None = None,
                 password: str | None = None):
        self.address = f"{host}:{port}"
        self._host, self._port, self._db = host, port, db
        self._auth = [a for a in (username, password) if a is not None]
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def call(self, *args: Arg, then: Callable[[], object] | None = None) -> object:
        """The server's reply; raises ResponseError for an error reply, ConnectionError or TimeoutError.
        then: work run once the command is written, while Redis computes the reply (what the caller will need
        of it anyway)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await self._send(protocol, args, then)

    async def _send(self, protocol: _Protocol, args: Sequence[Arg], then: Callable[[], object] | None = None) -> object:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        protocol.send(pack(args), future)
        timer = loop.call_later(self.timeout_s, _expire, future, self.address, self.timeout_s)
        try:
            if then is not None:
                then()
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _connect(self) -> _Protocol:
        """The connection, waited for at most timeout_s. One attempt at a time, shared by concurrent callers and
        bounded by CONNECT_TIMEOUT_S, not by a call's timeout: a caller that gives up leaves it running, so on a
        loaded machine (a connect can take longer than the ledger's 0.25 s) the next call finds the connection
        made instead of starting, and losing, an attempt of its own."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieved)
        try:
            return await asyncio.wait_for(asyncio.shield(self._connecting), self.timeout_s)
        except TimeoutError:
            raise RedisConnectionError(f"cannot connect to Redis at {self.address}: no connection within "
                                       f"{self.timeout_s:g}s (still trying for up to {self._open_timeout_s:g}s)"
                                       ) from None

    @property
    def _open_timeout_s(self) -> float:
        return max(self.timeout_s, CONNECT_TIMEOUT_S)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self.address), self._host, self._port), self._open_timeout_s)
        except OSError as exc:  # TimeoutError included
            cause = str(exc) or f"timed out after {self._open_timeout_s:g}s"
            raise RedisConnectionError(f"cannot connect to Redis at {self.address}: {cause}") from None
        try:
            if self._auth:
                await self._send(protocol, ["AUTH", *self._auth])
            if self._db:
                await self._send(protocol, ["SELECT", self._db])
        except BaseException:
            assert protocol.transport is not None
            protocol.transport.close()
            raise
        self._protocol = protocol
        return protocol

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


def _retrieved(attempt: asyncio.Future) -> None:
    """Marks a connection attempt's failure as seen: the callers that waited got their own error, and one that
    failed after they gave up is reported by the next call's attempt."""
    if not attempt.cancelled():
        attempt.exception()


def _expire(future: asyncio.Future, address: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError(f"Redis at {address} did not answer within {timeout_s:g}s"))


class PipelinedScript:
    """A Lua script called by its SHA1 over a PipelinedConnection, loaded again by EVAL when Redis lost it.

    retries: calls repeated after a lost or refused connection (for scripts that are idempotent, as the
    ledger's are per reservation id); a timeout is not retried."""

    def __init__(self, connection: PipelinedConnection, source: str, retries: int = 0):
        self.connection = connection
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.retries = retries

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg],
                       then: Callable[[], object] | None = None) -> object:
        """then: as in PipelinedConnection.call, run once (after the first attempt's write)."""
        attempt = 0
        while True:
            try:
                return await self._run(keys, args, then if attempt == 0 else None)
            except RedisConnectionError:
                if attempt >= self.retries:
                    raise
                attempt += 1

    async def _run(self, keys: Sequence[Arg], args: Sequence[Arg], then: Callable[[], object] | None) -> object:
        try:
            return await self.connection.call("EVALSHA", self.sha, len(keys), *keys, *args, then=then)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.connection.call("EVAL", self.source, len(keys), *keys, *args)


def for_url(url: str, timeout_s: float) -> PipelinedConnection | None:
    """A pipelined connection for a plain redis:// URL of a single server; None for what it does not speak."""
    if urlsplit(url).scheme != "redis":
        return None
    parts = parse_url(url)
    if "host" not in parts:
        return None
    return PipelinedConnection(str(parts["host"]), int(parts.get("port", 6379)), timeout_s=timeout_s,
                               db=int(parts.get("db", 0) or 0), username=parts.get("username"),
                               password=parts.get("password"))
