"""The Grafana dashboard references only metrics the router exports."""

from __future__ import annotations

import json
import re

from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.scheduling.fleet import FleetState

from .conftest import ROOT

DASHBOARD = ROOT / "deploy" / "dashboards" / "switchpoint-matrix.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "info": ("_info",)}


def exported_names() -> set[str]:
    names = set()
    for family in RouterMetrics(lambda: {}, FleetState()).registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_expression_uses_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bswitchpoint_[a-z0-9_]+", target["expr"]))
            assert names, f"{panel['title']}: no Switchpoint metric in {target['expr']}"
            used |= names
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    assert {"switchpoint_route_requests_total", "switchpoint_request_ttft_seconds_bucket",
            "switchpoint_budget_outcomes_total", "switchpoint_replica_inflight"} <= used


def test_the_matrix_panel_spans_the_three_dimensions():
    dashboard = json.loads(DASHBOARD.read_text())
    matrix = dashboard["panels"][0]
    assert matrix["type"] == "heatmap"
    assert "by (workload, decision, pool)" in matrix["targets"][0]["expr"]
