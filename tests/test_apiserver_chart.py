"""`helm install` of charts/switchpoint into a real API server, and the operator's RBAC as the server enforces it.

Least privilege is checked with `kubectl auth can-i --as system:serviceaccount:...` (the API server's own
authoriser answering for the chart's ServiceAccount): the operator may do what it does (the operator tests run it
with this ServiceAccount's token) and nothing else; with operator.watchNamespaces its namespaced rights exist only
in those namespaces. No kubelet runs here, so the operator's pod never starts; its objects exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.apiserver_support import POLICY_REFUSAL, ControlPlane, can_i, grants
from tests.conftest import ROOT

pytestmark = pytest.mark.apiserver

CHART = ROOT / "charts" / "switchpoint"
SP = "switchpoint.dev"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    watch: tuple[str, ...] = ()
    nudge: bool = True

    @property
    def fullname(self) -> str:
        return f"{self.name}-switchpoint"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


CLUSTER_WIDE = Release("sp", "switchpoint-system")
SCOPED = Release("scoped", "scoped-system", watch=("team-x", "team-y"), nudge=False)


def install(plane: ControlPlane, release: Release) -> str:
    args = ["install", release.name, str(CHART), "--namespace", release.namespace, "--create-namespace"]
    if release.watch:
        args += ["--set", f"operator.watchNamespaces={{{','.join(release.watch)}}}"]
    if not release.nudge:
        args += ["--set", "operator.nudgeRouterPods=false"]
    return plane.helm(*args).stdout


@pytest.fixture(scope="module")
def releases(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    for namespace in SCOPED.watch:
        control_plane.kubectl("create", "namespace", namespace)
    installed = [install(control_plane, r) for r in (CLUSTER_WIDE, SCOPED)]
    assert all("STATUS: deployed" in out for out in installed), installed
    yield control_plane
    for release in (CLUSTER_WIDE, SCOPED):
        control_plane.helm("uninstall", release.name, "--namespace", release.namespace)


def test_helm_install_creates_the_charts_objects(releases: ControlPlane) -> None:
    for release in (CLUSTER_WIDE, SCOPED):
        ns, full = release.namespace, release.fullname
        deployment = releases.get_json("deployment", f"{full}-operator", "-n", ns)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == full
        assert pod["containers"][0]["image"] == "ghcr.io/switchpoint/operator:0.1.0"
        assert "readyReplicas" not in deployment.get("status", {})  # stored, not run: no kubelet here
        releases.get_json("serviceaccount", full, "-n", ns)
        settings = releases.get_json("configmap", f"{full}-router-settings", "-n", ns)
        assert "router-settings.yaml" in settings["data"]
        releases.get_json("clusterrole", f"{full}-operator")
        binding = releases.get_json("clusterrolebinding", f"{full}-operator")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full, "namespace": ns}]
    for namespace in SCOPED.watch:
        releases.get_json("role", f"{SCOPED.fullname}-operator", "-n", namespace)
        releases.get_json("rolebinding", f"{SCOPED.fullname}-operator", "-n", namespace)
    listed = releases.helm("list", "--all-namespaces", "-o", "json").stdout
    assert '"name":"sp"' in listed and '"name":"scoped"' in listed
    assert listed.count('"status":"deployed"') >= 2


# What the operator does (see operator/kube.py and apply.py, and kopf's watches) in a namespace it manages.
OWNED = ("configmaps", "services", "deployments.apps", "poddisruptionbudgets.policy",
         "horizontalpodautoscalers.autoscaling",
         # each policy's routers' identity: they list and watch pods themselves
         "serviceaccounts", "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io")
# `get` where `list` is granted reads nothing more; the chart grants it with the reads.
NAMESPACED = {
    *((verb, f"{kind}.{SP}") for kind in ("modelpools", "routingpolicies", "budgets")
      for verb in ("get", "list", "watch")),
    *((verb, f"{kind}.{SP}/status") for kind in ("modelpools", "routingpolicies", "budgets")
      for verb in ("get", "patch")),
    ("update", f"routingpolicies.{SP}/finalizers"),  # blockOwnerDeletion under OwnerReferencesPermissionEnforcement
    ("get", "pods"), ("list", "pods"), ("watch", "pods"),
    *((verb, kind) for kind in OWNED for verb in ("get", "list", "watch", "create", "patch", "delete")),
}
NUDGE = {("patch", "pods")}  # operator.nudgeRouterPods (the default) annotates router pods after a policy edit
CRDS = {(verb, "customresourcedefinitions.apiextensions.k8s.io") for verb in ("get", "list", "watch")}
NAMESPACES = {(verb, "namespaces") for verb in ("get", "list", "watch")}


def test_cluster_wide_operator_can_do_what_it_needs_and_no_more(releases: ControlPlane) -> None:
    expected = NAMESPACED | NUDGE | CRDS
    assert grants(releases, CLUSTER_WIDE.user, "default") == expected
    assert grants(releases, CLUSTER_WIDE.user, "any-namespace") == expected
    user = CLUSTER_WIDE.user
    assert can_i(releases, user, "create", "deployments.apps", "*")
    assert can_i(releases, user, "patch", "routingpolicies.switchpoint.dev/status", "*")
    assert not can_i(releases, user, "patch", "routingpolicies.switchpoint.dev", "*")  # users' specs are theirs
    assert not can_i(releases, user, "get", "secrets", "*")
    assert not can_i(releases, user, "create", "pods", "*")
    assert not can_i(releases, user, "update", "deployments.apps", "*")
    assert not can_i(releases, user, "create", "customresourcedefinitions.apiextensions.k8s.io", None)
    for kind in ("clusterroles", "clusterrolebindings"):  # what it grants stays in a namespace
        assert not can_i(releases, user, "create", f"{kind}.rbac.authorization.k8s.io", None)
    assert not can_i(releases, user, "bind", "roles.rbac.authorization.k8s.io", "*")
    assert not can_i(releases, user, "escalate", "roles.rbac.authorization.k8s.io", "*")


def test_scoped_operator_has_namespaced_rights_only_where_it_watches(releases: ControlPlane) -> None:
    user = SCOPED.user
    for namespace in SCOPED.watch:  # nudgeRouterPods=false: no write on pods at all
        assert grants(releases, user, namespace) == NAMESPACED | CRDS | NAMESPACES
    for namespace in ("default", SCOPED.namespace, "team-z"):
        assert grants(releases, user, namespace) == CRDS | NAMESPACES  # cluster-wide, read-only, for kopf
    assert can_i(releases, user, "create", "deployments.apps", "team-x")
    assert not can_i(releases, user, "create", "deployments.apps", "default")
    assert not can_i(releases, user, "list", "pods", "*")
    assert not can_i(releases, user, "patch", "pods", "team-y")
    assert can_i(releases, user, "watch", "namespaces", None)


def as_operator(plane: ControlPlane, *args: str, stdin: str | None = None) -> tuple[bool, str]:
    """A kubectl write impersonating the cluster-wide operator: (allowed, stderr)."""
    done = plane.kubectl(*args, "--as", CLUSTER_WIDE.user, stdin=stdin, check=False)
    return done.returncode == 0, done.stderr


def test_the_admission_policy_confines_the_operators_writes_to_its_router_objects(releases: ControlPlane) -> None:
    """RBAC lets the cluster-wide operator patch and delete every ConfigMap and pod; the chart's
    ValidatingAdmissionPolicy lets it touch only its own router objects and the router pods' digest annotation."""
    plane, ns = releases, "default"
    plane.await_operator_policy(CLUSTER_WIDE.user, ns)
    plane.kubectl("create", "configmap", "someone-elses", "-n", ns, "--from-literal=k=v")
    managed_label = "app.kubernetes.io/managed-by=switchpoint-operator"
    owned = POLICY_REFUSAL
    assert as_operator(plane, "annotate", "configmap", "someone-elses", "-n", ns, "x=y") == (False, ANY(owned))
    assert as_operator(plane, "label", "configmap", "someone-elses", "-n", ns, managed_label) == (False, ANY(owned))
    assert as_operator(plane, "delete", "configmap", "someone-elses", "-n", ns) == (False, ANY(owned))
    mine = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "mine", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "switchpoint-operator"}}}
    assert as_operator(plane, "create", "-f", "-", stdin=json.dumps(mine))[0]
    assert as_operator(plane, "annotate", "configmap", "mine", "-n", ns, "x=y")[0]
    assert as_operator(plane, "label", "configmap", "mine", "-n", ns, "app.kubernetes.io/managed-by-") == (
        False, ANY(owned))  # nor give its own away
    assert as_operator(plane, "delete", "configmap", "mine", "-n", ns)[0]
    assert plane.kubectl("annotate", "configmap", "someone-elses", "-n", ns, "x=y").returncode == 0  # others: as before

    nudge = "the Switchpoint operator may only set the switchpoint.dev/config-digest annotation of router pods"
    digest = "switchpoint.dev/config-digest=0123abcd"
    for name, labels in (("a-model-server", {"app": "vllm"}),
                         ("a-router", {"app.kubernetes.io/name": "switchpoint-router"})):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
               "spec": {"containers": [{"name": "c", "image": "registry.example/c:1"}]}}
        plane.kubectl("create", "-f", "-", stdin=json.dumps(pod))
    assert as_operator(plane, "annotate", "pod", "a-model-server", "-n", ns, digest) == (False, ANY(nudge))
    assert as_operator(plane, "annotate", "pod", "a-router", "-n", ns, digest)[0]
    assert as_operator(plane, "annotate", "pod", "a-router", "-n", ns, "other=x") == (False, ANY(nudge))
    assert as_operator(plane, "label", "pod", "a-router", "-n", ns, "app=x") == (False, ANY(nudge))
    image = {"spec": {"containers": [{"name": "c", "image": "registry.example/other:1"}]}}
    assert as_operator(plane, "patch", "pod", "a-router", "-n", ns, "-p", json.dumps(image)) == (False, ANY(nudge))
    plane.kubectl("delete", "pod/a-model-server", "pod/a-router", "configmap/someone-elses", "-n", ns, "--wait=false")


def test_the_admission_policy_confines_the_routers_grants_to_listing_and_watching_pods(releases: ControlPlane) -> None:
    """RBAC lets the operator write Roles and RoleBindings with what it holds itself (create Deployments, patch
    pods...); the policy lets its Roles only list and watch pods, and its RoleBindings only bind their own Role to
    ServiceAccounts of their namespace."""
    plane, ns = releases, "default"
    plane.await_operator_policy(CLUSTER_WIDE.user, ns)
    labels = {"app.kubernetes.io/managed-by": "switchpoint-operator"}
    meta = {"name": "r", "namespace": ns, "labels": labels}
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    rbac = "rbac.authorization.k8s.io/v1"
    for rules in ([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch"]}],
                  [*pods, {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}]):
        refused = as_operator(plane, "create", "-f", "-", stdin=json.dumps({"apiVersion": rbac, "kind": "Role",
                                                                             "metadata": meta, "rules": rules}))
        assert refused == (False, ANY("the Switchpoint operator's Roles may only list and watch pods")), rules
    assert as_operator(plane, "create", "-f", "-", stdin=json.dumps({"apiVersion": rbac, "kind": "Role",
                                                                      "metadata": meta, "rules": pods}))[0]
    other = {"apiVersion": rbac, "kind": "Role", "metadata": {"name": "other", "namespace": ns}, "rules": pods}
    plane.kubectl("create", "-f", "-", stdin=json.dumps(other))  # someone else's, that the operator could grant
    subject = {"kind": "ServiceAccount", "name": "r", "namespace": ns}
    only = "the Switchpoint operator's RoleBindings may only bind the Role of their own name"
    for ref, subjects in (({"kind": "Role", "name": "other"}, [subject]),
                          ({"kind": "Role", "name": "r"}, [{**subject, "namespace": "kube-system"}]),
                          ({"kind": "Role", "name": "r"}, [{"kind": "User", "name": "someone",
                                                            "apiGroup": "rbac.authorization.k8s.io"}])):
        binding = {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", **ref}, "subjects": subjects}
        assert as_operator(plane, "create", "-f", "-", stdin=json.dumps(binding)) == (False, ANY(only)), binding
    binding = {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [subject]}
    assert as_operator(plane, "create", "-f", "-", stdin=json.dumps(binding))[0]
    assert as_operator(plane, "delete", "rolebinding/r", "role/r", "-n", ns)[0]
    plane.kubectl("delete", "role/other", "-n", ns)


class ANY:
    """Equal to any text that contains `part`."""

    def __init__(self, part: str):
        self.part = part

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.part in other

    def __repr__(self) -> str:
        return f"<text containing {self.part!r}>"


def test_the_endpoint_picker_may_list_and_watch_pods_in_its_namespace_only(control_plane: ControlPlane) -> None:
    """The picker is a router on a policy's compiled config: it watches the pods of its selector pools, as a
    ServiceAccount of its own (the chart's), with nothing else."""
    plane, release, ns = control_plane, "pick", "picker-team"
    plane.helm("install", release, str(CHART), "--namespace", ns, "--create-namespace", "--set",
               "endpointPicker.enabled=true,endpointPicker.policy=auto")
    try:
        name = f"{release}-switchpoint-picker"
        pod = plane.get_json("deployment", name, "-n", ns)["spec"]["template"]["spec"]
        assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (name, True)
        user = f"system:serviceaccount:{ns}:{name}"
        assert grants(plane, user, ns) == {("list", "pods"), ("watch", "pods")}
        assert grants(plane, user, "default") == set()
    finally:
        plane.helm("uninstall", release, "--namespace", ns)
