"""The settle key in a cluster: the chart creates the Secret, the operator's router pods and the endpoint picker
read it (SWITCHPOINT_SETTLE_KEY, optional so a router without it still starts)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from switchpoint.operator.objects import _env
from switchpoint.operator.settings import settings_from_dict
from tests.test_chart import HELM, find, render, router_settings

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make test installs it)")

REF = {"name": "sp-switchpoint-settle-key", "key": "key", "optional": True}


def test_the_chart_creates_a_random_settle_key_and_keeps_it(tmp_path: Path) -> None:
    objects = render(tmp_path)
    [secret] = find(objects, "Secret", "sp-switchpoint-settle-key")
    assert len(base64.b64decode(secret["data"]["key"])) == 48
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert router_settings(objects)["settleKey"] == {"name": "sp-switchpoint-settle-key", "key": "key"}


@pytest.mark.parametrize(("values", "expected"), [
    ({"settleKey": {"existingSecret": {"name": "mine", "key": "k"}}}, {"name": "mine", "key": "k"}),
    ({"settleKey": {"create": False}}, None),
])
def test_your_own_secret_or_none(tmp_path: Path, values, expected) -> None:
    objects = render(tmp_path, values)
    assert not find(objects, "Secret", "sp-switchpoint-settle-key")
    assert router_settings(objects).get("settleKey") == expected


def test_the_endpoint_picker_reads_the_key(tmp_path: Path) -> None:
    objects = render(tmp_path, {"endpointPicker": {"enabled": True, "policy": "assistant"},
                                "redis": {"url": "redis://r:6379/0"}})
    [picker] = [d for d in find(objects, "Deployment") if "picker" in d["metadata"]["name"]]
    env = picker["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SWITCHPOINT_SETTLE_KEY", "valueFrom": {"secretKeyRef": REF}} in env


def test_the_operator_gives_router_pods_the_key() -> None:
    settings = settings_from_dict({"redis": {"url": "redis://r:6379/0"},
                                   "settleKey": {"name": "sp-switchpoint-settle-key", "key": "key"}})
    assert _env(settings) == [{"name": "SWITCHPOINT_REDIS_URL", "value": "redis://r:6379/0"},
                              {"name": "SWITCHPOINT_SETTLE_KEY", "valueFrom": {"secretKeyRef": REF}}]
    assert _env(settings_from_dict({})) == []
