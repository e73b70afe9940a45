"""xds-protos ships files of opentelemetry-proto and common-expression-language: the install keeps theirs, and an
install where xds-protos' copy won is refused with the cause and the fix, where each is needed."""

from __future__ import annotations

import cel
import pytest
from opentelemetry.proto.common.v1 import common_pb2

from switchpoint.config.schema import _compiled
from switchpoint.overlaps import ClobberedInstall, pins
from switchpoint.router.telemetry import check_otlp_protos

CHECKS = [
    (common_pb2, "InstrumentationScope", check_otlp_protos, "opentelemetry/proto"),
    (cel, "compile", lambda: _compiled("self.x > 0"), "cel module"),
]


@pytest.mark.parametrize(("module", "attribute", "check", "named"), CHECKS, ids=["otlp", "cel"])
def test_a_clobbered_module_is_named_with_its_fix(monkeypatch, module, attribute, check, named):
    check()  # this install is sound (make reinstalls both after xds-protos)
    _compiled.cache_clear()
    monkeypatch.delattr(module, attribute)
    with pytest.raises(ClobberedInstall) as caught:
        check()
    assert named in str(caught.value) and f"pip install --force-reinstall --no-deps {pins()}" in str(caught.value)
    _compiled.cache_clear()


def test_the_pins_name_both_packages_at_their_versions():
    assert pins().startswith("opentelemetry-proto==") and " common-expression-language==" in pins()
