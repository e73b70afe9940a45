"""`switchpoint gateway` as a user runs it: Envoy and a router up, one line saying where, both gone on exit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from switchpoint.bench.gateway import FastFleet
from switchpoint.localredis import free_port
from tests.conftest import EXAMPLES

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_gateway_serves_the_openai_api_and_stops_both_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    pools = [d for d in yaml.safe_load_all((EXAMPLES / "pools.yaml").read_text()) if d]
    small = next(p for p in pools if p["metadata"]["name"] == "small-chat")
    small["spec"]["replicas"]["static"] = [{"address": f"127.0.0.1:{port}"}]
    (tmp_path / "pools.yaml").write_text(yaml.safe_dump(small))
    (tmp_path / "policy.yaml").write_text(json.dumps({
        "apiVersion": "switchpoint.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": "auto", "namespace": "default"},
        "spec": {"aliases": ["auto"], "default": {"pools": [{"pool": "small-chat"}]}}}))
    keys = tmp_path / "keys.yaml"
    keys.write_text("sk-test-acme-01: acme\n")
    with FastFleet([{"port": port, "model": MODEL, "role": "both"}]):
        proc = subprocess.Popen([sys.executable, "-m", "switchpoint.cli", "--log-level", "warning", "gateway",
                                 "--config", str(tmp_path / "pools.yaml"), str(tmp_path / "policy.yaml"),
                                 "--port", "0", "--api-keys", str(keys)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
            assert found, line
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{found.group(1)}/v1", api_key="sk-test-acme-01",
                                   max_retries=0, timeout=10)
            reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=3)
            assert reply.model == MODEL and reply.usage.completion_tokens == 3
            spawned = children(proc.pid)
            assert len(spawned) == 2  # the router and Envoy
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        assert code == 0
        assert not any(alive(pid) for pid in spawned)


def test_gateway_refuses_a_bad_api_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("short: acme\n")
    done = subprocess.run([sys.executable, "-m", "switchpoint.cli", "gateway", "--config", str(EXAMPLES),
                           "--api-keys", str(keys)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "entry 1: a key must be" in done.stderr


@pytest.mark.parametrize("flag", ["--fail-open"])
def test_fail_open_without_static_replicas_is_refused(tmp_path: Path, flag: str) -> None:
    (tmp_path / "policy.yaml").write_text((EXAMPLES / "policy.yaml").read_text())
    (tmp_path / "pools.yaml").write_text((EXAMPLES / "cluster" / "pools.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "switchpoint.cli", "gateway", "--config", str(tmp_path), flag],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "static replicas" in done.stderr


def test_bench_gateway_prints_the_documented_json() -> None:
    done = subprocess.run([sys.executable, "-m", "switchpoint.cli", "--log-level", "error", "bench", "gateway",
                           "--rounds", "1", "--calls", "20", "--concurrency", "2", "--duration", "0.2", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent.parent)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("envoy_only_p50_ms", "envoy_only_p99_ms", "extproc_p50_ms", "extproc_p99_ms", "added_p50_ms",
                "added_p99_ms", "extproc_rps", "direct_p50_ms"):
        assert isinstance(result[key], float), key
    assert result["extproc_p50_ms"] > result["envoy_only_p50_ms"] > 0
    assert result["extproc_body_mode"].startswith("BUFFERED") and result["modes"]["duplex"]["body_mode"] == \
        "FULL_DUPLEX_STREAMED"
