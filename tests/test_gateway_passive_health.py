"""Passive health through the gateway: a killed replica of a pool without scraped metrics is taken out of
rotation by what the response path sees (Envoy's 503 for a refused connection), not kept for the whole run."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import openai
import pytest

from switchpoint.bench.gateway import FastFleet
from switchpoint.gateway import EnvoyProcess, GatewayConfig, envoy_config
from switchpoint.localredis import free_port
from tests.conftest import ThreadedRouter, wait_for

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def two_replicas(tmp_path) -> Iterator[tuple[ThreadedRouter, EnvoyProcess, FastFleet]]:  # type: ignore[no-untyped-def]
    ports = [free_port(), free_port()]
    (tmp_path / "pool.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: switchpoint.dev/v1alpha1
        kind: ModelPool
        metadata: {{name: frail, namespace: default}}
        spec:
          models: [{{name: {MODEL}}}]
          replicas: {{static: [{{address: "127.0.0.1:{ports[0]}"}}, {{address: "127.0.0.1:{ports[1]}"}}]}}
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: RoutingPolicy
        metadata: {{name: auto, namespace: default}}
        spec:
          aliases: [auto]
          default: {{pools: [{{pool: frail}}]}}
        """))
    extproc = free_port()
    spec = [{"port": p, "model": MODEL, "role": "both"} for p in ports]
    with FastFleet(spec[:1]), FastFleet(spec[1:]) as doomed, \
            ThreadedRouter(config_paths=[tmp_path], extproc_port=extproc) as router, \
            EnvoyProcess(envoy_config(GatewayConfig(f"127.0.0.1:{extproc}", port=0, admin_port=0))) as envoy:
        yield router, envoy, doomed


def test_a_killed_replica_is_taken_out_of_rotation(two_replicas) -> None:  # type: ignore[no-untyped-def]
    router, envoy, doomed = two_replicas
    client = openai.OpenAI(base_url=f"http://{envoy.address}/v1", api_key="-", max_retries=0, timeout=10)

    def ask(i: int) -> bool:
        try:
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"question {i}"}],
                                           max_tokens=2)
            return True
        except openai.APIStatusError as exc:
            assert exc.status_code == 503  # Envoy: upstream connect error
            return False

    assert all(ask(i) for i in range(6))
    doomed.__exit__(None, None, None)  # the replica dies; the pool has no metrics to notice it by
    outcomes = [ask(i) for i in range(40)]
    failures = outcomes.count(False)
    assert 1 <= failures <= 3, outcomes  # three consecutive failures eject it (OutlierPolicy's default)
    assert all(outcomes[-30:]), outcomes  # then every request goes to the live replica

    def errors() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in router.metrics_text().splitlines()
                   if line.startswith("switchpoint_reports_total{") and 'outcome="error"' in line)

    assert wait_for(lambda: errors() == failures), (errors(), outcomes)  # each failure settled as an error
