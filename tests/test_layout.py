"""The package layout of docs/architecture.md: folders mapped into one `switchpoint` distribution."""

from __future__ import annotations

import importlib
import subprocess
import sys


def test_operator_folder_never_shadows_the_standard_library():
    out = subprocess.run([sys.executable, "-c", "import operator, switchpoint.operator as o; "
                          "print(operator.__file__); print(o.__file__)"], capture_output=True, text=True, check=True)
    stdlib, ours = out.stdout.split()
    assert "site-packages" not in stdlib and not stdlib.startswith(str(importlib.import_module("switchpoint").__path__))
    assert ours.endswith("operator/__init__.py")


def test_generated_stubs_are_importable_as_switchpoint_v1():
    from switchpoint.v1 import router_pb2, router_pb2_grpc

    assert router_pb2.DESCRIPTOR.package == "switchpoint.v1"
    assert hasattr(router_pb2_grpc, "RouterStub")


def test_every_package_folder_is_in_the_distribution():
    """An installed (non-editable) wheel only carries the packages pyproject lists: a folder left out works
    in the editable checkout and breaks in the container image."""
    import tomllib

    from tests.conftest import ROOT

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, roots = set(setuptools["packages"]), setuptools["package-dir"]
    found = set()
    for package, folder in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found - listed == set(), "folders missing from [tool.setuptools] packages"
