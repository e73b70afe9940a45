"""The pipelined Redis connection (router/resp.py) against a real Redis: order, failures, reloads, URLs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchpoint.localredis import RedisServer
from switchpoint.router import resp


def _connection(server: RedisServer, timeout_s: float = 1.0) -> resp.PipelinedConnection:
    conn = resp.for_url(server.url, timeout_s)
    assert conn is not None
    return conn


@pytest.mark.parametrize("args, wire", [
    (["PING"], b"*1\r\n$4\r\nPING\r\n"),
    (["SET", "k", 12, b"\x00\r\n"], b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n\x00\r\n\r\n"),
    (["GET", "é"], b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"),
])
def test_commands_are_packed_as_resp_arrays_of_bulk_strings(args: list, wire: bytes) -> None:
    assert resp.pack(args) == wire


def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(redis_server: RedisServer) -> None:
    async def main() -> tuple[list[object], int]:
        conn = _connection(redis_server)
        try:
            replies = await asyncio.gather(*(conn.call("ECHO", f"reply-{i}") for i in range(300)))
            clients = await conn.call("CLIENT", "LIST")
        finally:
            await conn.close()
        assert isinstance(clients, bytes)
        return replies, clients.count(b"cmd=")

    replies, connections = asyncio.run(main())
    assert replies == [f"reply-{i}".encode() for i in range(300)]
    assert connections == 1


def test_an_error_reply_raises_and_the_connection_stays_usable(redis_server: RedisServer) -> None:
    async def main() -> object:
        conn = _connection(redis_server)
        try:
            await conn.call("SET", "text", "abc")
            with pytest.raises(ResponseError, match="not an integer"):
                await conn.call("INCR", "text")
            return await conn.call("GET", "text")
        finally:
            await conn.close()

    assert asyncio.run(main()) == b"abc"


def test_a_timed_out_call_fails_alone_and_later_replies_stay_in_order(redis_server: RedisServer) -> None:
    async def main() -> list[object]:
        conn = _connection(redis_server, timeout_s=0.2)
        try:
            with pytest.raises(RedisTimeoutError, match=r"did not answer within 0\.2s"):
                await conn.call("BLPOP", "nothing-here", "0.5")  # Redis answers nil after 0.5 s
            await asyncio.sleep(0.4)
            return [await conn.call("ECHO", "after"), await conn.call("PING")]
        finally:
            await conn.close()

    assert asyncio.run(main()) == [b"after", b"PONG"]


def test_a_dead_server_fails_calls_naming_it_and_a_restarted_one_is_reconnected(redis_server: RedisServer) -> None:
    async def main() -> object:
        conn = _connection(redis_server)
        try:
            assert await conn.call("SET", "kept", "1") == b"OK"
            redis_server.stop()
            with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{redis_server.port}"):
                await conn.call("GET", "kept")
            with pytest.raises(RedisConnectionError, match="cannot connect"):
                await conn.call("GET", "kept")
            redis_server.start()
            return await conn.call("GET", "kept")
        finally:
            await conn.close()

    assert asyncio.run(main()) == b"1"


def test_a_script_is_loaded_again_after_the_server_forgot_it(redis_server: RedisServer) -> None:
    async def main() -> list[object]:
        conn = _connection(redis_server)
        script = resp.PipelinedScript(conn, "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
        try:
            first = await script(keys=["a"], args=["b", 41])
            await conn.call("SCRIPT", "FLUSH")
            second = await script(keys=["c"], args=["d", 1])
            return [first, second]
        finally:
            await conn.close()

    assert asyncio.run(main()) == [[b"a", b"b", 42], [b"c", b"d", 2]]


def test_a_script_retries_once_over_a_new_connection_when_the_old_one_was_lost(redis_server: RedisServer) -> None:
    async def main() -> object:
        conn = _connection(redis_server)
        script = resp.PipelinedScript(conn, "return redis.call('INCR', KEYS[1])", retries=1)
        try:
            await script(keys=["n"], args=[])
            await conn.call("CLIENT", "KILL", "TYPE", "normal")  # the server drops this very connection
            return await script(keys=["n"], args=[])
        finally:
            await conn.close()

    assert asyncio.run(main()) == 2


def test_the_url_database_and_password_are_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with RedisServer(tmp_path, persist=False, args=["--requirepass", "s3cret"]) as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"

        async def main() -> None:
            conn = resp.for_url(url, 1.0)
            assert conn is not None
            try:
                await conn.call("SET", "where", "db3")
            finally:
                await conn.close()
            bad = resp.for_url(f"redis://:wrong@127.0.0.1:{server.port}/0", 1.0)
            assert bad is not None
            with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
                await bad.call("PING")
            await bad.close()

        asyncio.run(main())
        with redis.Redis(port=server.port, password="s3cret", db=3) as check:
            assert check.get("where") == b"db3"


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6380/0", "unix:///tmp/redis.sock"])
def test_urls_it_does_not_speak_are_left_to_redis_py(url: str) -> None:
    assert resp.for_url(url, 1.0) is None


class _SlowListener:
    """A TCP relay to a real Redis whose accept queue (backlog 0) is kept full, so a new client's SYN goes
    unanswered and the kernel sends it again ~1 s later: a connect that takes longer than a call's timeout, as
    on a loaded machine. `admit_one()` makes room for one connection for 1.4 s, relays the one that comes (if any)
    to Redis, and then fills the queue again."""

    def __init__(self, server: RedisServer):
        self.server = server
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = [socket.create_connection(("127.0.0.1", self.port))]  # completes, waits in the queue
        self.admitted: list[socket.socket] = []

    def admit_one(self) -> None:
        threading.Thread(target=self._admit, daemon=True).start()

    def _admit(self) -> None:
        self.sock.accept()[0].close()  # the filler: room for one, for 1.4 s
        self.sock.settimeout(1.4)
        try:
            client, _ = self.sock.accept()  # a SYN sent again within that time
        except TimeoutError:
            client = None
        self.fillers.append(socket.create_connection(("127.0.0.1", self.port)))  # full again
        if client is None:
            return
        upstream = socket.create_connection(("127.0.0.1", self.server.port))
        self.admitted += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        for s in (*self.fillers, *self.admitted, self.sock):
            s.close()


def test_a_connect_slower_than_the_call_timeout_is_not_abandoned(redis_server: RedisServer) -> None:
    """The first call gives up after its timeout, naming the cause; the connection attempt goes on and a later call
    uses it, although a new attempt would still not get through."""
    assert resp.CONNECT_TIMEOUT_S > 1.8
    slow = _SlowListener(redis_server)

    async def main() -> object:
        conn = resp.PipelinedConnection("127.0.0.1", slow.port, timeout_s=0.2)
        try:
            with pytest.raises(RedisConnectionError, match=r"no connection within 0\.2s \(still trying"):
                await conn.call("PING")
            slow.admit_one()
            await asyncio.sleep(1.8)  # the SYN is sent again ~1 s after the first: within the attempt's own bound
            return await conn.call("PING")
        finally:
            await conn.close()

    try:
        assert asyncio.run(main()) == b"PONG"
    finally:
        slow.close()
