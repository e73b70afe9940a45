"""Shared fixtures: a real router server on 127.0.0.1, real Redis, example manifests."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchpoint.localredis import RedisServer
from switchpoint.router import redisconn
from switchpoint.router.server import RouterServer
from switchpoint.v1 import router_pb2, router_pb2_grpc
from tests.apiserver_support import control_plane  # noqa: F401  (session fixture: etcd + kube-apiserver)

ROOT = Path(__file__).resolve().parent.parent
# How long the routers the tests start wait for Redis (see ThreadedRouter); router processes take PATIENT_REDIS.
TEST_REDIS_TIMEOUT_MS = 2000
PATIENT_REDIS = ["--redis-timeout-ms", str(TEST_REDIS_TIMEOUT_MS)]
EXAMPLES = ROOT / "deploy" / "examples"


@pytest.fixture(autouse=True)
def _fresh_redis_kinds() -> None:
    """The router remembers per URL whether a Redis is a cluster (router/redisconn.py), for the process's life. The
    tests start many servers on OS-chosen ports, and a port comes back: a cluster node on the port of an earlier
    test's single server must not be taken for one (a CI run failed that way)."""
    redisconn._kinds.clear()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "apiserver: needs the test control plane (etcd + kube-apiserver; make test "
                                       "builds it, `make controlplane` alone)")


class ThreadedRouter:
    """A RouterServer on its own event loop thread, reached over real gRPC on 127.0.0.1."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("metrics_port", 0)
        # The product's 0.25 s Redis deadline is for a quiet production Redis. A CI host under load stalls longer
        # now and then, and a router's first budgeted Route then finds the ledger "unreachable" (a lease test failed
        # so). These routers wait longer; a dead or stopped Redis still fails at once (connection refused), and the
        # deadline itself is tested where it is the subject (test_resp.py, test_cache.py).
        kwargs.setdefault("redis_timeout_s", TEST_REDIS_TIMEOUT_MS / 1000)
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


def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll until predicate() is true or the timeout passes; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis 8 server on 127.0.0.1 that a test can stop and start again (its data survives)."""
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
