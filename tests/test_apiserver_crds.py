"""The CRDs and the example manifests against a real kube-apiserver, with the real kubectl.

The API server compiles the CEL rules (and refuses a CRD whose rules exceed its cost budget), evaluates them on
every write, fills in the schema defaults and prints the columns: here each of those is checked against what
local mode (switchpoint.config.schema) does with the same CRDs, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from switchpoint.config import schema
from tests.apiserver_support import CRD_NAMES, ControlPlane
from tests.conftest import EXAMPLES
from tests.operator_support import load

pytestmark = pytest.mark.apiserver

LOCAL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))  # what `kubectl apply -f deploy/examples/` applies


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The CRDs installed and the local-mode examples applied in `default`, as a user starts."""
    control_plane.install_crds()
    control_plane.kubectl("apply", "-f", str(EXAMPLES))
    return control_plane


def example(kind: str, name: str) -> dict[str, Any]:
    for path in LOCAL_EXAMPLES:
        for doc in load(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise KeyError(f"{kind} {name}")


def test_crds_are_accepted_and_established(cluster: ControlPlane) -> None:
    assert "unchanged" in cluster.install_crds()  # the fixture applied them; a second apply changes nothing
    assert sorted(CRD_NAMES) == sorted(f"{c['spec']['names']['plural']}.{c['spec']['group']}"
                                       for c in schema.crd_documents())
    for name in CRD_NAMES:
        crd = cluster.get_json("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True", conditions


def test_examples_are_stored_with_the_defaults_local_mode_fills_in(cluster: ControlPlane) -> None:
    docs = [doc for path in LOCAL_EXAMPLES for doc in load(path)]
    assert sorted(d["kind"] for d in docs) == ["Budget"] * 3 + ["ModelPool"] * 2 + ["RoutingPolicy"] * 2
    for doc in docs:
        live = cluster.get_json(doc["kind"].lower(), doc["metadata"]["name"], "-n", "default")
        resource = schema.schema_for(doc["kind"], "v1alpha1")
        assert resource is not None
        local, violations = schema.validate(resource, doc)
        assert violations == []
        assert live["spec"] == local["spec"], doc["metadata"]["name"]
    pool = cluster.get_json("modelpool", "small-chat", "-n", "default")["spec"]
    assert pool["pricing"]["currency"] == "USD" and pool["replicas"]["static"][0]["role"] == "both"  # a few
    policy = cluster.get_json("routingpolicy", "auto", "-n", "default")["spec"]
    assert policy["default"]["selection"] == {"algorithm": "static", "k": 10, "exploration": 1,
                                                  "encoder": "minilm-static"}
    budget = cluster.get_json("budget", "trial-tenant-tokens", "-n", "default")["spec"]
    assert budget["window"]["reset"] == "Rolling" and budget["limit"]["tokenType"] == "total"
    assert budget["failurePolicy"] == "Open"


def test_the_cluster_examples_are_accepted(cluster: ControlPlane) -> None:
    """deploy/examples/cluster/ (selector pools, stand-in model-server Deployments), as the server would store it."""
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES / "cluster")).stdout
    assert out.count("(server dry run)") == sum(len(load(p)) for p in (EXAMPLES / "cluster").glob("*.yaml")), out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path (list indexes as numbers) in a manifest."""
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for part in parents:
            node = node[part]
        node[last] = value
    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part) if part.isdigit() else part]
        del node[last]
    return mutate


# (case, example kind, example name, mutation, the CRD's message)
INVALID = [
    ("pool-selector-and-static", "ModelPool", "small-chat",
     _set("spec.replicas.selector", {"matchLabels": {"app": "x"}}),
     "set exactly one of replicas.selector and replicas.static"),
    ("pool-selector-without-port", "ModelPool", "small-chat",
     _set("spec.replicas", {"selector": {"matchLabels": {"app": "x"}}}),
     "replicas.port is required with replicas.selector"),
    ("policy-duplicate-priorities", "RoutingPolicy", "auto", _set("spec.decisions.1.priority", 300),
     "decision priorities must be unique, so that exactly one decision wins"),
    ("signal-with-two-kinds", "RoutingPolicy", "auto", _set("spec.signals.0.regex", {"patterns": ["x"]}),
     "a signal sets exactly one of keywords, regex, promptTokens, contextTokens, metadata, tenant, tools, "
     "classifier, pii, similarity"),
    ("token-range-without-bounds", "RoutingPolicy", "auto", _set("spec.signals.4.promptTokens", {}),
     "set min, max or both"),
    ("token-range-inverted", "RoutingPolicy", "auto", _set("spec.signals.4.promptTokens", {"min": 20, "max": 10}),
     "min must not exceed max"),
    ("rule-with-two-kinds", "RoutingPolicy", "auto", _set("spec.decisions.0.when", {"signal": "agent", "not": {}}),
     "a rule sets exactly one of signal, all, any, not"),
    ("knn-without-dataset", "RoutingPolicy", "auto", _set("spec.default.selection", {"algorithm": "knn"}),
     "knn needs a dataset"),
    ("weighted-without-weights", "RoutingPolicy", "auto", _set("spec.default.selection", {"algorithm": "weighted"}),
     "weighted needs weights"),
    ("lambda-and-target-share", "RoutingPolicy", "auto",
     _set("spec.default.selection", {"algorithm": "cost-quality", "lambda": 1, "targetQualityShare": 0.9}),
     "set lambda or targetQualityShare, not both"),
    ("downgrade-without-target", "Budget", "per-tenant-monthly-spend", _drop("spec.onExhausted.downgradeTo"),
     "onExhausted.downgradeTo is required when the action is Downgrade"),
    ("tenant-scope-without-name", "Budget", "acme-daily-tokens", _drop("spec.scope.name"),
     "scope.name is required unless scope.type is EachTenant"),
    ("limit-tokens-and-amount", "Budget", "acme-daily-tokens", _set("spec.limit.amount", 10),
     "set exactly one of limit.tokens and limit.amount"),
]


@pytest.mark.parametrize(("case", "kind", "name", "mutate", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_the_api_server_refuses_invalid_manifests_with_our_cel_messages(
        cluster: ControlPlane, case: str, kind: str, name: str, mutate: Callable[[dict[str, Any]], None],
        message: str) -> None:
    doc = copy.deepcopy(example(kind, name))
    doc["metadata"]["name"] = case
    mutate(doc)
    done = cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(doc), check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "is invalid" in done.stderr  # refused by validation (422), not by anything else
    resource = schema.schema_for(kind, "v1alpha1")
    assert resource is not None
    assert message in [v.message for v in schema.validate(resource, doc)[1]]  # local mode says the same
    fixed = copy.deepcopy(example(kind, name))
    fixed["metadata"]["name"] = case
    cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(fixed))  # the control passes


def columns(table: str) -> list[dict[str, str]]:
    """`kubectl get` output (one table per kind, blank-line separated) as rows keyed by header."""
    rows: list[dict[str, str]] = []
    for block in table.strip().split("\n\n"):
        header, *lines = block.splitlines()
        starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
        names = header.split()
        for line in lines:
            cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            rows.append(dict(zip(names, cells, strict=True)))
    return rows


def test_kubectl_get_shows_the_printer_columns(cluster: ControlPlane) -> None:
    cluster.kubectl("patch", "modelpool", "large-reasoning", "-n", "default", "--subresource=status", "--type=merge",
                    "-p", '{"status": {"readyReplicas": 3, "conditions": [{"type": "Accepted", "status": "True", '
                          '"reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}')
    out = cluster.kubectl("get", "modelpools,routingpolicies,budgets", "-n", "default").stdout
    headers = [block.splitlines()[0].split() for block in out.strip().split("\n\n")]
    expected = [["NAME", *(c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"])]
                for crd in sorted(schema.crd_documents(), key=lambda c: ["ModelPool", "RoutingPolicy", "Budget"]
                                  .index(c["spec"]["names"]["kind"]))]
    assert headers == expected
    rows = {row["NAME"].split("/")[-1]: row for row in columns(out)}
    assert rows["large-reasoning"]["MODEL"] == "Qwen/Qwen2.5-72B-Instruct"
    assert rows["large-reasoning"]["HARDWARE"] == "nvidia-h100"
    assert rows["large-reasoning"]["READY"] == "3" and rows["large-reasoning"]["ACCEPTED"] == "True"
    assert rows["small-chat"]["READY"] == ""  # no status yet
    assert rows["auto"]["ALIASES"] == '["auto","switchpoint/auto"]'
    assert rows["acme-daily-tokens"]["SCOPE"] == "Tenant" and rows["acme-daily-tokens"]["WINDOW"] == "1d"
    assert rows["per-tenant-monthly-spend"]["ACTION"] == "Downgrade"
    assert all(row["AGE"] for row in rows.values())
