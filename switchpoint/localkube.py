"""A real Kubernetes control plane on 127.0.0.1, envtest-style: etcd and kube-apiserver, for tests and benches.

Both binaries are built from their Go modules (k8s.io/kubernetes v1.37, go.etcd.io/etcd/server/v3) by
deploy/tools/controlplane/build.sh into the venv's bin (`make controlplane`; `make test` runs it first). There is
no controller manager, scheduler or kubelet: objects are stored, validated (schemas, CEL, admission) and
authorised (RBAC) exactly as in a cluster, but nothing acts on them: no pod starts, no Deployment reports
replicas, no garbage collector follows ownerReferences. A test or bench plays those parts where it needs them.

The API server runs with RBAC authorisation, a client-certificate admin (group system:masters), a service-account
token issuer (so `kubectl create token` hands out a ServiceAccount's credential) and
OwnerReferencesPermissionEnforcement (as some distributions run it), so RBAC is checked in full.
The ServiceAccount admission plugin is off, as in envtest: without a controller manager no namespace gets its
`default` ServiceAccount, and every Pod would be refused.

`switchpoint bench discovery` starts one when it is given no kubeconfig; tests share one per session
(tests/apiserver_support.py).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from switchpoint.localredis import free_port

ROOT = Path(__file__).resolve().parent.parent  # the checkout (crds/ is read from there)
BIN = Path(sys.prefix) / "bin"  # the venv's: make puts the binaries there
KUBE_APISERVER, ETCD, KUBECTL, HELM = (BIN / name for name in ("kube-apiserver", "etcd", "kubectl", "helm"))
BUILD_HINT = {KUBE_APISERVER: "make controlplane", ETCD: "make controlplane", KUBECTL: "make .venv/bin/helm",
              HELM: "make .venv/bin/helm"}
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The message of the chart's ValidatingAdmissionPolicy (charts/switchpoint/templates/admission-policy.yaml).
POLICY_REFUSAL = "the Switchpoint operator writes only the router objects it manages"
CRD_NAMES = ("modelpools.switchpoint.dev", "routingpolicies.switchpoint.dev", "budgets.switchpoint.dev")


def missing_binaries() -> list[str]:
    """What is not built yet, each with the command that builds it."""
    return [f"{path} (run `{BUILD_HINT[path]}`)" for path in BUILD_HINT if not path.exists()]


def openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {done.stderr.strip()}")


def make_pki(directory: Path) -> None:
    """A CA, the API server's serving certificate (127.0.0.1, localhost), the admin's client certificate and the
    service-account signing key; P-256 keys (fast to make), valid for a day."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1")
    ca, ca_key = str(directory / "ca.crt"), str(directory / "ca.key")
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-subj", "/CN=switchpoint-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    signed = ("-CA", ca, "-CAkey", ca_key)
    openssl("req", "-x509", *ec, *signed, "-keyout", str(directory / "serving.key"),
            "-out", str(directory / "serving.crt"), "-subj", "/CN=kube-apiserver",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "extendedKeyUsage=serverAuth")
    openssl("req", "-x509", *ec, *signed, "-keyout", str(directory / "admin.key"),
            "-out", str(directory / "admin.crt"), "-subj", "/O=system:masters/CN=admin",
            "-addext", "extendedKeyUsage=clientAuth")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(directory / "sa.key"))
    openssl("ec", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))


def kubeconfig(server: str, ca: Path, user: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}


class ControlPlane:
    """etcd + kube-apiserver in `workdir`; `kubectl`/`helm` run as the admin unless given another kubeconfig."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.admin_kubeconfig = workdir / "admin.kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def etcd_command(self) -> list[str]:
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.peer_port}"
        return [str(ETCD), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"test={peer}",
                "--unsafe-no-fsync", "--log-level", "warn"]

    def apiserver_command(self) -> list[str]:
        pki = self.pki
        return [str(KUBE_APISERVER), f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'certs'}", f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}", f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={ISSUER}", f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--disable-admission-plugins=ServiceAccount",
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--endpoint-reconciler-type=none",  # the kubernetes Service would need a non-loopback address
                "--enable-priority-and-fairness=false", "--profiling=false", "--v=0"]

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log_name).open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def log_tail(self, log_name: str, lines: int = 30) -> str:
        path = self.workdir / log_name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self, timeout_s: float = 90.0) -> None:
        self.pki.mkdir(parents=True)
        make_pki(self.pki)
        self.admin_kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.url, self.pki / "ca.crt", {
            "client-certificate": str(self.pki / "admin.crt"), "client-key": str(self.pki / "admin.key")})))
        etcd = self._spawn(self.etcd_command(), "etcd.log")
        apiserver = self._spawn(self.apiserver_command(), "kube-apiserver.log")
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for proc, name in ((etcd, "etcd.log"), (apiserver, "kube-apiserver.log")):
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name.removesuffix('.log')} exited with {proc.returncode}:\n"
                                       f"{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kube-apiserver not ready after {timeout_s:.0f}s ({last}):\n"
                           f"{self.log_tail('kube-apiserver.log')}")

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the API server first, then its etcd
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def env(self, config: Path | None = None) -> dict[str, str]:
        """kubectl's and helm's environment: this cluster, and helm's state kept inside workdir."""
        helm_home = self.workdir / "helm"
        return {**os.environ, "KUBECONFIG": str(config or self.admin_kubeconfig),
                "HELM_CACHE_HOME": str(helm_home / "cache"), "HELM_CONFIG_HOME": str(helm_home / "config"),
                "HELM_DATA_HOME": str(helm_home / "data")}

    def run(self, binary: Path, args: Sequence[str], *, stdin: str | None = None, check: bool = True,
            config: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(binary), *args], input=stdin, capture_output=True, text=True,
                              env=self.env(config), timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{binary.name} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(KUBECTL, args, stdin=stdin, check=check, config=config)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(HELM, args, check=check, timeout=120)

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def install_crds(self) -> str:
        """`kubectl apply -f crds/` and wait until the kinds are served; kubectl's output."""
        out = self.kubectl("apply", "-f", str(ROOT / "crds")).stdout
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", *(f"crd/{n}" for n in CRD_NAMES))
        return out

    def await_operator_policy(self, user: str, namespace: str) -> None:
        """Wait until the chart's ValidatingAdmissionPolicy is in force for `user` (the API server loads a new
        policy about a second after it is created): until a write to someone else's ConfigMap is refused."""
        self.kubectl("create", "configmap", "policy-probe", "-n", namespace)
        eventually(lambda: POLICY_REFUSAL in self.kubectl("annotate", "configmap", "policy-probe", "-n", namespace,
                                                          "probe=1", "--as", user, check=False).stderr,
                   what=f"the operator's admission policy in force for {user}")
        self.kubectl("delete", "configmap", "policy-probe", "-n", namespace)

    def token_kubeconfig(self, namespace: str, service_account: str, name: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount, with a token from the TokenRequest API
        (what a pod's projected token is), as the operator reads it in a cluster."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration", "2h").stdout.strip()
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self.pki / "ca.crt", {"token": token})))
        return path


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy (an AssertionError, e.g. kubectl get of an object that is not
    there yet, counts as not yet); fail with the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")
