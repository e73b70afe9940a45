"""The test control plane (switchpoint/localkube.py) as a session fixture for every `apiserver` test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchpoint.localkube import BIN, CRD_NAMES, POLICY_REFUSAL, ControlPlane, eventually, missing_binaries

__all__ = ["BIN", "CRD_NAMES", "POLICY_REFUSAL", "ControlPlane", "can_i", "control_plane", "eventually", "grants"]


def can_i(plane: ControlPlane, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as `user`: namespace "*" asks for every namespace, None for a cluster-scoped kind."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", user]
    if sub:
        args.append(f"--subresource={sub}")
    if namespace == "*":
        args.append("--all-namespaces")
    elif namespace:
        args += ["-n", namespace]
    done = plane.kubectl(*args, check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), done.stderr
    return answer == "yes"


def grants(plane: ControlPlane, user: str, namespace: str) -> set[tuple[str, str]]:
    """(verb, resource) pairs `kubectl auth can-i --list` shows for `user` in `namespace`, less what every
    authenticated user may do (a ServiceAccount without bindings shows those)."""
    def listed(who: str) -> set[tuple[str, str]]:
        out = plane.kubectl("auth", "can-i", "--list", "--as", who, "-n", namespace).stdout
        header, *rows = out.rstrip().splitlines()
        starts = [header.index(title) for title in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
        found = set()
        for row in rows:
            resource, non_resource, names, verbs = (row[a:b].strip() for a, b in
                                                    zip(starts, [*starts[1:], None], strict=True))
            assert names == "[]", row  # no rule is narrowed to resourceNames
            found |= {(verb, resource or non_resource) for verb in verbs.strip("[]").split()}
        return found
    return listed(user) - listed("system:serviceaccount:default:nobody")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane per test session, shared by every `apiserver` test (each uses its own namespaces)."""
    missing = missing_binaries()
    if missing:
        pytest.fail("the test control plane is not built: " + "; ".join(missing) + " (make test builds it first)")
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
