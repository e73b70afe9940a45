"""The scheduling extension points (filters, scorers, pickers, profiles) and the CRD name the same things.

The RoutingPolicy CRD's enums under spec.scheduling are read from crds/ and each is tied to its
registry; an enum there that no registry backs fails the test, and so does a registered name
the CRD does not accept. Every name is then compiled from a manifest and placed with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.config.compiler import compile_manifests
from switchpoint.config.errors import ConfigError
from switchpoint.config.manifests import API_VERSION, Manifest
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.request import ChatTurn, RouteInput
from switchpoint.router.scheduling.filters import FILTERS
from switchpoint.router.scheduling.pickers import PICKERS
from switchpoint.router.scheduling.profiles import PROFILES
from switchpoint.router.scheduling.scheduler import DESTINATION_FILTER, PREFILL_FILTER, Scheduler
from switchpoint.router.scheduling.scorers import SCORERS

CRD = Path(__file__).resolve().parent.parent / "crds" / "switchpoint.dev_routingpolicies.yaml"
# field path inside one spec.scheduling[] entry -> the registry its enum must equal
TIED: dict[str, dict[str, Any]] = {"profile": PROFILES, "scorers[].name": SCORERS}


def scheduling_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["scheduling"]["items"]


def enums(schema: dict, path: str = "") -> dict[str, list]:
    """Every enum in a schema, by field path (list items as `[]`)."""
    found = {path: schema["enum"]} if "enum" in schema else {}
    for name, sub in (schema.get("properties") or {}).items():
        found.update(enums(sub, f"{path}.{name}" if path else name))
    if "items" in schema:
        found.update(enums(schema["items"], f"{path}[]"))
    return found


def test_every_scheduling_enum_of_the_crd_is_a_registry():
    crd = enums(scheduling_schema())
    assert set(crd) == set(TIED), "an enum under spec.scheduling without a registry (or a registry without its enum)"
    for path, registry in TIED.items():
        assert sorted(crd[path]) == sorted(registry), f"spec.scheduling[].{path} and its registry differ"


def test_profiles_name_only_registered_plugins_and_every_plugin_is_used():
    for profile in PROFILES.values():
        assert {n for n, _ in profile.weights} <= set(SCORERS), profile.name
        assert all(w > 0 for _, w in profile.weights), profile.name
        assert profile.picker in PICKERS, profile.name
        assert set(profile.filters) <= set(FILTERS), profile.name
    assert {p.picker for p in PROFILES.values()} == set(PICKERS)
    assert {f for p in PROFILES.values() for f in p.filters} | {DESTINATION_FILTER, PREFILL_FILTER} == set(FILTERS)


def policy(scheduling: dict) -> list[Manifest]:
    pool = {"apiVersion": API_VERSION, "kind": "ModelPool", "metadata": {"name": "p"},
            "spec": {"models": [{"name": "m"}], "contextTokens": 8192,
                     "replicas": {"static": [{"address": "h:1"}, {"address": "h:2", "role": "prefill"},
                                             {"address": "h:3", "role": "decode"}]}}}
    pol = {"apiVersion": API_VERSION, "kind": "RoutingPolicy", "metadata": {"name": "r"},
           "spec": {"aliases": ["r"], "default": {"pools": [{"pool": "p"}]},
                    "scheduling": [{"pool": "p", **scheduling}]}}
    return [Manifest("test", pool), Manifest("test", pol)]


def place(scheduling: dict):
    config = compile_manifests(policy(scheduling))
    (candidate,) = config.policies["default/r"].default.candidates
    req = RouteInput(request_id="1", model="r", messages=(ChatTurn("user", "a question " * 200),))
    return candidate, Scheduler(InflightLedger()).place(candidate, req)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_compiles_and_places(profile):
    candidate, placement = place({"profile": profile})
    assert candidate.scheduling.profile == profile
    assert placement.replica.address in {"h:1", "h:3"} and placement.prefill.address == "h:2"


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_each_scorer_compiles_as_a_weight_and_scores(name):
    candidate, placement = place({"profile": "gie-default", "scorers": [{"name": name, "weight": 7}]})
    assert (name, 7.0) in candidate.scheduling.weights
    scores = dict(placement.scores)
    assert placement.replica.address in scores and all(0 <= s <= 2 + 2 + 3 + 7 for s in scores.values())


@pytest.mark.parametrize(("field", "value", "where"), [
    ("profile", "fastest", "spec.scheduling[0].profile: 'fastest'"),
    ("scorers", [{"name": "vibes", "weight": 1}], "spec.scheduling[0].scorers[0].name: 'vibes'"),
])
def test_a_name_no_registry_knows_is_refused_at_compile_time(field, value, where):
    with pytest.raises(ConfigError) as caught:
        compile_manifests(policy({field: value}))
    assert where in str(caught.value)
