"""The CRDs follow Kubernetes conventions, and the example CRs are valid against them."""

from __future__ import annotations

import pytest

from switchpoint.config import schema
from switchpoint.config.manifests import load_manifests

from .conftest import EXAMPLES

CRDS = {crd["spec"]["names"]["kind"]: crd for crd in schema.crd_documents()}


def test_the_three_kinds_are_defined_in_one_group():
    assert set(CRDS) == {"ModelPool", "RoutingPolicy", "Budget"}
    assert {crd["spec"]["group"] for crd in CRDS.values()} == {"switchpoint.dev"}


@pytest.mark.parametrize("kind", ["ModelPool", "RoutingPolicy", "Budget"])
def test_crd_conventions(kind):
    crd = CRDS[kind]
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.switchpoint.dev"
    assert names["shortNames"] and "switchpoint" in names["categories"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {"status": {}}
    assert any(c["name"] == "Age" for c in version["additionalPrinterColumns"])
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"} <= set(condition)


def test_every_cel_rule_compiles():
    import cel

    def rules(node):
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", ()):
                yield rule["rule"]
            for value in node.values():
                yield from rules(value)
        elif isinstance(node, list):
            for value in node:
                yield from rules(value)

    found = [r for crd in CRDS.values() for r in rules(crd)]
    assert len(found) >= 8
    for rule in found:
        cel.compile(rule)


def test_example_manifests_validate_against_the_crds():
    manifests, problems = load_manifests([EXAMPLES])
    assert not problems and len(manifests) == 7
    for m in manifests:
        resource = schema.schema_for(m.kind, "v1alpha1")
        _, violations = schema.validate(resource, m.obj)
        assert violations == [], m.ref
