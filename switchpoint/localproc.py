"""Running Switchpoint commands as separate local processes (for the demo, the benchmarks and tests)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LISTENING = re.compile(r"listening on (\S+):(\d+)(?:, metrics on :(\d+))?")


class _Child:
    """A `switchpoint …` child process whose first line of output says it is up; stopped (SIGTERM) on exit."""

    what = "process"

    def __init__(self, args: list[str], start_timeout_s: float):
        self.cmd = [sys.executable, "-m", "switchpoint.cli", "--log-level", "warning", *args]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> str:
        """Start the process and return its first line of output."""
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def _failed(self, line: str) -> RuntimeError:
        assert self.proc is not None
        self.proc.kill()
        return RuntimeError(f"{self.what} did not start (exit {self.proc.wait()}): {line.strip() or 'no output'}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


class RouterProcess(_Child):
    """`switchpoint router` on 127.0.0.1 with OS-chosen ports."""

    what = "router"

    def __init__(self, config: list[Path], metrics: bool = True, extra: list[str] | None = None,
                 start_timeout_s: float = 30.0):
        super().__init__(["router", "--config", *map(str, config), "--port", "0",
                          *(["--metrics-port", "0"] if metrics else []), *(extra or [])], start_timeout_s)
        self.port = 0
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> RouterProcess:
        line = self._start()
        found = LISTENING.search(line)
        if not found:
            raise self._failed(line)
        self.port = int(found.group(2))
        self.metrics_port = int(found.group(3)) if found.group(3) else None
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        wait_serving(self.address, timeout_s=self.start_timeout_s, what="router")

    def cpu_seconds(self) -> float:
        """User + system CPU time the router process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimProcess(_Child):
    """`switchpoint sim --fleet FILE` on 127.0.0.1."""

    what = "simulator"

    def __init__(self, fleet_file: Path, start_timeout_s: float = 30.0):
        super().__init__(["sim", "--fleet", str(fleet_file)], start_timeout_s)

    def __enter__(self) -> SimProcess:
        line = self._start()
        if "switchpoint sim:" not in line:
            raise self._failed(line)
        return self


@contextlib.contextmanager
def separate_cores(router_pid: int) -> Iterator[None]:
    """The router's threads on the last CPU, this process on the others (no-op on a one-CPU machine): the
    benchmarks measure the router on one core, not the client's threads competing with it."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        yield
        return
    for tid in os.listdir(f"/proc/{router_pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cpus))


def wait_serving(address: str, service: str = "", timeout_s: float = 30.0, what: str = "server") -> None:
    """Until gRPC health at `address` answers SERVING for `service`; RuntimeError naming both after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} at {address} not serving{f' {service}' if service else ''} "
                                   f"after {timeout_s:g}s")
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`; returns once it is gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
