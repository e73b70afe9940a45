"""Signal kinds and selection algorithms: the CRD and the registries name the same things.

The RoutingPolicy CRD is read from crds/; its signal fields, the CEL rule that a signal sets exactly
one of them, and the selection algorithm enum are each tied to the registry the router uses. A kind
or an algorithm added on one side only fails here. Every signal kind is then compiled from a manifest
and reported under its own name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from switchpoint.config.compiler import compile_manifests
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.router.selectors import algorithm_names, selection_algorithm
from switchpoint.router.selectors.base import SelectorError
from switchpoint.router.signals.rules import RULE_KINDS, signal_kind, signal_kinds

CRD = Path(__file__).resolve().parent.parent / "crds" / "switchpoint.dev_routingpolicies.yaml"


def spec_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def test_the_crd_signal_fields_are_the_registered_kinds():
    items = spec_schema()["signals"]["items"]
    fields = set(items["properties"]) - {"name", "description"}
    assert fields == set(signal_kinds())
    (rule,) = [v["rule"] for v in items["x-kubernetes-validations"] if "size() == 1" in v["rule"]]
    assert set(re.findall(r"has\(self\.(\w+)\)", rule)) == set(signal_kinds())


def test_the_crd_selection_algorithms_are_the_registry():
    decision = spec_schema()["decisions"]["items"]["properties"]
    assert set(decision["selection"]["properties"]["algorithm"]["enum"]) == set(algorithm_names())


def test_an_unknown_algorithm_names_the_registered_ones():
    with pytest.raises(SelectorError) as caught:
        selection_algorithm("genetic")
    assert all(name in str(caught.value) for name in algorithm_names())


EXAMPLE_SIGNALS = {
    "keywords": {"terms": ["hello"]},
    "regex": {"patterns": ["h.llo"]},
    "promptTokens": {"min": 1},
    "contextTokens": {"max": 100},
    "metadata": {"key": "x-team"},
    "tenant": {"in": ["acme"]},
    "tools": {"present": True},
    "classifier": {"name": "domain", "labels": ["math"]},
    "pii": {},
    "similarity": {"examples": ["hello there"]},
}


@pytest.mark.parametrize("kind", sorted(EXAMPLE_SIGNALS))
def test_every_kind_compiles_and_reports_its_name(kind):
    assert set(EXAMPLE_SIGNALS) == set(signal_kinds())
    pool = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "p"},
            "spec": {"models": [{"name": "m"}], "replicas": {"static": [{"address": "127.0.0.1:1"}]}}}
    policy = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": "r"},
              "spec": {"aliases": ["r"], "signals": [{"name": "s", kind: EXAMPLE_SIGNALS[kind]}],
                       "decisions": [{"name": "d", "priority": 1, "when": {"signal": "s"}, "pools": [{"pool": "p"}]}],
                       "default": {"pools": [{"pool": "p"}]}}}
    config = compile_manifests([Manifest("t", pool), Manifest("t", policy)])
    (signal,) = config.policies["default/r"].signals
    assert signal_kind(signal) == kind
    assert type(signal) in RULE_KINDS or kind in ("classifier", "pii", "similarity")
