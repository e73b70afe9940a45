"""Packages that ship the same files, and the fix for an install where the wrong copy won.

xds-protos (Envoy's ext_proc stubs) carries older copies of opentelemetry-proto's generated modules
and an empty `cel/__init__.py` that hides common-expression-language's. Whichever package pip writes
last wins, so a fresh install may break OTLP export or the CRD rules' evaluation. `make` and the
container image reinstall the overwritten packages after everything else (`pins()`); the router checks
at the two places that need them and names the cause and this fix rather than fail obscurely.
"""

from __future__ import annotations

from importlib.metadata import version

OVERWRITTEN_BY_XDS_PROTOS = ("opentelemetry-proto", "common-expression-language")


class ClobberedInstall(RuntimeError):
    pass


def pins() -> str:
    """The overwritten distributions pinned at their installed versions, for `pip install --force-reinstall`."""
    return " ".join(f"{name}=={version(name)}" for name in OVERWRITTEN_BY_XDS_PROTOS)


def require(ok: bool, what: str) -> None:
    if not ok:
        raise ClobberedInstall(f"{what} was overwritten by xds-protos' copy of the same files; restore it with: "
                               f"pip install --force-reinstall --no-deps {pins()}")


if __name__ == "__main__":
    print(pins())
