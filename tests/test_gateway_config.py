"""The gateway's Envoy config: accepted by the real Envoy in every mode, the shipped file current, API keys checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from switchpoint.gateway import GatewayConfig, Identity, deploy_config, envoy_binary, envoy_config, load_api_keys

ROOT = Path(__file__).resolve().parent.parent


def validate(config: dict | str, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("mode", ["split", "duplex", "buffered"])
def test_every_mode_is_accepted_by_envoy_and_binds_loopback_only(mode: str, tmp_path: Path) -> None:
    keys = {"sk-test-key-0001": Identity("acme"), "sk-o'brien-2": Identity("o.brien", "pat")}
    for fail_open in (False, True):
        cfg = GatewayConfig("127.0.0.1:9002", mode=mode, api_keys=keys, fail_open=fail_open,
                            fallback=("127.0.0.1:8101",) if fail_open else ())
        config = envoy_config(cfg)
        validate(config, tmp_path)
        assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
        assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_the_modes_ask_envoy_for_what_they_need() -> None:
    def extprocs(mode: str) -> list[dict]:
        hcm = envoy_config(GatewayConfig("127.0.0.1:9002", mode=mode))["static_resources"]["listeners"][0][
            "filter_chains"][0]["filters"][0]["typed_config"]
        return [f["typed_config"] for f in hcm["http_filters"] if "ext_proc" in f["typed_config"]["@type"]]

    route, observe = extprocs("split")
    assert route["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert route["processing_mode"]["response_header_mode"] == "SKIP"
    assert observe["observability_mode"] and observe["failure_mode_allow"]
    [duplex] = extprocs("duplex")
    assert duplex["processing_mode"]["request_trailer_mode"] == "SEND"  # Envoy requires it with full duplex
    [buffered] = extprocs("buffered")
    assert buffered["allow_mode_override"]


def test_the_shipped_config_is_current_and_valid(tmp_path: Path) -> None:
    shipped = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    assert shipped == deploy_config(), "deploy/envoy/envoy.yaml is stale: write switchpoint.gateway.deploy_config()"
    validate(shipped, tmp_path)


@pytest.mark.parametrize("text, needle", [
    ("", "expected a YAML map"),
    ("[a, b]", "expected a YAML map"),
    ("short: acme", "entry 1: a key must be"),
    ("sk-valid-key-1: 'has space'", "entry 1: the tenant must be a name"),
    ("sk-valid-key-1: {user: pat}", "entry 1: the tenant"),
    ("sk-valid-key-1: acme\nsk-valid-key-2: {tenant: globex, user: 'a b'}", "entry 2: the user"),
    ("sk-valid-key-1: [unclosed", "cannot read"),
])
def test_bad_api_key_files_are_refused_naming_the_entry(text: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"keys\.yaml") as caught:
        load_api_keys(path)
    assert needle in str(caught.value)


def test_api_keys_map_to_tenants_and_users(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("sk-acme-000001: acme\nsk-trial-00001: {tenant: trial, user: pat}\n")
    assert load_api_keys(path) == {"sk-acme-000001": Identity("acme"), "sk-trial-00001": Identity("trial", "pat")}


def test_fail_open_needs_somewhere_to_go() -> None:
    with pytest.raises(ValueError, match="fallback"):
        GatewayConfig("127.0.0.1:9002", fail_open=True)
    with pytest.raises(ValueError, match="mode"):
        GatewayConfig("127.0.0.1:9002", mode="streamed")
