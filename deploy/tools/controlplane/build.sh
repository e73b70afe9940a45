#!/bin/sh
# Builds the test control plane (kube-apiserver and etcd, from the modules pinned in go.mod) into the directory
# given as $1 (make test passes .venv/bin). Go's module and build caches (~/go, ~/.cache/go-build) make a
# rebuild cheap; make skips this script altogether while the binaries are newer than go.mod and go.sum.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
bindir=$(cd "$1" && pwd)
cd "$here"
export CGO_ENABLED=0
kube_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$kube_version" | cut -d. -f2)
# The version the apiserver reports (and kubectl version shows); kubernetes' own build stamps it the same way.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean"
# nice: the machine's two cores are shared; a cold build takes minutes, a warm one only links.
nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$bindir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
nice -n 10 go build -trimpath -ldflags "-s -w" -o "$bindir/etcd.tmp" go.etcd.io/etcd/server/v3
mv "$bindir/kube-apiserver.tmp" "$bindir/kube-apiserver"
mv "$bindir/etcd.tmp" "$bindir/etcd"
"$bindir/kube-apiserver" --version
"$bindir/etcd" --version | head -1
