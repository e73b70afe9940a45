"""router.budgetLeases: the chart's value reaches both kinds of router pods (the operator's and the endpoint
picker's) as --no-budget-leases, with the real helm binary; a value that is not a boolean is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchpoint.cli import _parser
from switchpoint.operator.objects import router_args
from switchpoint.operator.settings import settings_from_dict
from tests.test_chart import HELM, find, render, router_settings

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make test installs it)")
PICKER = {"endpointPicker": {"enabled": True, "policy": "auto"}}


@pytest.mark.parametrize(("values", "leases"), [({}, True), ({"router": {"budgetLeases": True}}, True),
                                                 ({"router": {"budgetLeases": False}}, False)])
def test_the_value_reaches_operator_and_picker_routers(tmp_path: Path, values: dict[str, Any], leases: bool) -> None:
    objects = render(tmp_path, PICKER | values)
    settings = settings_from_dict(router_settings(objects))
    assert settings.budget_leases is leases
    assert ("--no-budget-leases" in router_args(settings)) is not leases
    picker = next(o for o in find(objects, "Deployment") if o["metadata"]["name"].endswith("-picker"))
    args = picker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--no-budget-leases" in args) is not leases
    assert _parser().parse_args(args).budget_leases is leases  # a flag of the router command, where it stands


@pytest.mark.parametrize("value", ["no", 0, "false", None])
def test_a_value_that_is_not_a_boolean_is_refused_by_name(value: object) -> None:
    with pytest.raises(ValueError, match="budgetLeases must be true or false"):
        settings_from_dict({"budgetLeases": value})


@pytest.mark.parametrize(("raw", "leases"),
                         [({}, True), ({"budgetLeases": True}, True), ({"budgetLeases": False}, False)])
def test_the_operators_router_arguments_parse_as_the_router_command(raw: dict, leases: bool) -> None:
    assert _parser().parse_args(router_args(settings_from_dict(raw))).budget_leases is leases


def test_the_operator_refuses_to_start_on_a_bad_settings_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before it connects to anything: exit 2, and the log names the setting and the file."""
    import argparse
    import asyncio

    from switchpoint.operator.command import add_arguments, serve_with
    from switchpoint.operator.kube import Connection

    path = tmp_path / "router-settings.yaml"
    path.write_text("budgetLeases: maybe\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--router-settings", str(path)])
    code = asyncio.run(serve_with(Connection("https://127.0.0.1:1"), args, None))
    assert code == 2
    assert "budgetLeases must be true or false, got 'maybe'" in caplog.text and str(path) in caplog.text
