"""Passive health through the gateway: a killed replica of a pool without scraped metrics is taken out of
rotation by what the response path sees (Envoy's 503 for a refused connection), not kept for the whole run."""

from __future__ import annotations

import textwrap
import time
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
    outcomes: list[bool] = []
    while outcomes.count(False) < 3 and len(outcomes) < 60:  # the scheduler picks it now and then, until ...
        outcomes.append(ask(len(outcomes)))
    failures = outcomes.count(False)
    assert failures == 3, outcomes  # ... its third failure in a row ejects it (OutlierPolicy's default)
    ejected = time.monotonic()

    def errors() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in router.metrics_text().splitlines()
                   if line.startswith("switchpoint_reports_total{") and 'outcome="error"' in line)

    # each failure settled as an error: the router has seen the third one (the observer's stream is send-and-go)
    assert wait_for(lambda: errors() == failures), (errors(), outcomes)
    after = []
    while len(after) < 20 and time.monotonic() - ejected < 3.0:  # well inside the first ejection's 5 s
        after.append(ask(len(outcomes) + len(after)))
    assert len(after) >= 5 and all(after), (outcomes, after)  # every request goes to the live replica
