"""The chart's endpoint-picker mode and the InferencePool example, with the real helm binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from switchpoint.router.frontdoors.extproc.settings import DEFAULT_PORT, EXTPROC_SERVICE
from tests.conftest import ROOT

CHART = ROOT / "charts" / "switchpoint"
HELM = ROOT / ".venv" / "bin" / "helm"
EXAMPLE = ROOT / "deploy" / "examples" / "cluster" / "inference-gateway" / "inference-pool.yaml"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make test installs it)")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)


def picker_objects(*sets: str) -> list[dict]:
    args = ["template", "sp", str(CHART), "--namespace", "default", "-s", "templates/endpoint-picker.yaml"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_the_picker_serves_ext_proc_on_9002_from_the_policys_compiled_config() -> None:
    objects = picker_objects("endpointPicker.enabled=true", "endpointPicker.policy=auto", "redis.bundled.enabled=true")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    service = next(o for o in objects if o["kind"] == "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--extproc-port") + 1] == str(DEFAULT_PORT)
    assert container["readinessProbe"]["grpc"] == {"port": DEFAULT_PORT, "service": EXTPROC_SERVICE}
    assert {"name": "config", "configMap": {"name": "auto-router-config"}} in pod["volumes"]
    assert container["env"][0]["value"].startswith("redis://sp-switchpoint-redis.")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["ext-proc"]["port"] == DEFAULT_PORT and ports["ext-proc"]["appProtocol"] == "kubernetes.io/h2c"


def test_the_picker_is_off_by_default_and_needs_a_policy() -> None:
    done = helm("template", "sp", str(CHART), "--namespace", "default")
    assert done.returncode == 0, done.stderr
    assert "-picker" not in done.stdout
    done = helm("template", "sp", str(CHART), "--set", "endpointPicker.enabled=true")
    assert done.returncode != 0 and "endpointPicker.policy is required" in done.stderr


def test_the_inference_pool_example_points_at_the_charts_picker() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d}
    service = next(o for o in picker_objects("endpointPicker.enabled=true", "endpointPicker.policy=auto")
                   if o["kind"] == "Service")
    ref = docs["InferencePool"]["spec"]["endpointPickerRef"]
    assert (ref["name"], ref["port"]["number"]) == (service["metadata"]["name"], DEFAULT_PORT)
    assert docs["InferencePool"]["apiVersion"] == "inference.networking.k8s.io/v1"
    backend = docs["HTTPRoute"]["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["kind"], backend["name"]) == ("InferencePool", docs["InferencePool"]["metadata"]["name"])
    pods = [d for d in yaml.safe_load_all((EXAMPLE.parent.parent / "model-servers.yaml").read_text()) if d]
    selector = docs["InferencePool"]["spec"]["selector"]["matchLabels"]
    assert any(selector.items() <= p["spec"]["template"]["metadata"]["labels"].items() for p in pods)


def test_helm_lint_with_the_picker_on(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"endpointPicker": {"enabled": True, "policy": "auto"}}))
    done = helm("lint", str(CHART), "--values", str(values))
    assert done.returncode == 0, done.stdout + done.stderr
