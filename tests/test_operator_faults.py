"""Faults: the API server unreachable or failing for a while; the operator retries, says why, and converges."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from switchpoint.operator.kube import DEPLOYMENTS, ApiError, Connection, KubeApi
from switchpoint.operator.reconciler import Reconciler
from switchpoint.operator.settings import RouterSettings
from tests.operator_support import Cluster, apply_examples, eventually


class FlakyApi(KubeApi):
    """The first `failures` requests fail the way a briefly unreachable or overloaded API server fails."""

    def __init__(self, connection: Connection, failures: int, error: Exception):
        super().__init__(connection)
        self.failures = failures
        self.error = error

    async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await super().request(*args, **kwargs)


@pytest.mark.parametrize(("error", "logged"), [
    (aiohttp.ClientConnectionError("Connection refused"), "ClientConnectionError: Connection refused"),
    (ApiError(503, "ServiceUnavailable", "etcd leader changed", "GET", "/apis"), "503 ServiceUnavailable"),
])
def test_api_briefly_unreachable(error: Exception, logged: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="switchpoint.operator")
    asyncio.run(unreachable_then_back(error))
    assert f"namespace default: reconcile failed (attempt 1: {type(error).__name__}" in caplog.text
    assert logged in caplog.text
    assert "retrying in 0.5s" in caplog.text and "retrying in 1.0s" in caplog.text


async def unreachable_then_back(error: Exception) -> None:
    async with Cluster() as cluster:
        await apply_examples(cluster)
        api = FlakyApi(Connection(cluster.url, insecure=True), failures=4, error=error)
        reconciler = Reconciler(api, RouterSettings(), debounce_s=0.01)
        reconciler.start()
        try:
            reconciler.enqueue("default")
            await eventually(lambda: cluster.get(DEPLOYMENTS, "default", "auto-router"), what="routers")
        finally:
            await reconciler.stop()
            await api.close()


def test_command_line() -> None:
    """The flags `switchpoint operator` takes (wired into the CLI by switchpoint/cli.py)."""
    import argparse

    from switchpoint.operator.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--namespace", "a", "--namespace", "b", "--no-nudge", "--router-settings", "x.yaml"])
    assert (args.namespace, args.nudge, args.router_settings, args.resync_seconds) == (["a", "b"], False, "x.yaml", 60)
