"""The fleet-size benchmark's manifests compile to the pool it claims, and a short run over real gRPC reports it."""

from __future__ import annotations

import pytest

from switchpoint.bench.fleet_scale import ALIAS, fleet_manifests, format_fleet_scale, measure_fleet_scale
from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import Manifest


@pytest.mark.parametrize("replicas", [2, 10, 1000])
def test_the_manifests_are_one_pool_of_that_many_static_replicas(replicas):
    config = compile_manifests([Manifest("fleet", doc) for doc in fleet_manifests(replicas)])
    (pool,) = config.pools.values()
    assert len({r.address for r in pool.static_replicas}) == replicas and pool.metrics is None
    assert [c.pool for c in config.aliases[ALIAS].default.candidates] == [pool]


def test_a_short_run_measures_route_over_grpc():
    result = measure_fleet_scale(sizes=(2,), calls=20)
    assert set(result["fleet"]) == {"2"}
    figures = result["fleet"]["2"]
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert result["fleet_ratio_1000_vs_10"] is None and result["fleet_target_met"] is False
    table = format_fleet_scale(result)
    assert table.splitlines()[1].startswith("2 ") and "1,000" not in table
