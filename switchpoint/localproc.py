"""Running a router as a separate local process (for the demo and the benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LISTENING = re.compile(r"listening on (\S+):(\d+)(?:, metrics on :(\d+))?")

class RouterProcess:
    """`switchpoint router` on 127.0.0.1 with OS-chosen ports; stopped (SIGTERM) on exit."""

    def __init__(self, config: list[Path], metrics: bool = True, extra: list[str] | None = None,
                 start_timeout_s: float = 30.0):
        self.cmd = [sys.executable, "-m", "switchpoint.cli", "--log-level", "warning", "router",
                    "--config", *map(str, config), "--port", "0", *(["--metrics-port", "0"] if metrics else []),
                    *(extra or [])]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
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
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = LISTENING.search(line)
        if not found:
            self.proc.kill()
            raise RuntimeError(f"router did not start (exit {self.proc.wait()}): {line.strip() or 'no output'}")
        self.port = int(found.group(2))
        self.metrics_port = int(found.group(3)) if found.group(3) else None
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"router at {self.address} not serving after {self.start_timeout_s}s")
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time the router process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class SimProcess:
    """`switchpoint sim --fleet FILE` on 127.0.0.1; stopped on exit."""

    def __init__(self, fleet_file: Path, start_timeout_s: float = 30.0):
        self.cmd = [sys.executable, "-m", "switchpoint.cli", "--log-level", "warning", "sim",
                    "--fleet", str(fleet_file)]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "switchpoint sim:" not in line:
            self.proc.kill()
            raise RuntimeError(f"simulator did not start (exit {self.proc.wait()}): {line.strip() or 'no output'}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
