"""Reading CR manifests from the same YAML files and folders that `kubectl apply -f` takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from switchpoint.config.errors import Problem

GROUP = "switchpoint.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = ("ModelPool", "RoutingPolicy", "Budget")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Manifest:
    source: str  # file, with #N for the N-th document of a multi-document file
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace") or "default")

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def manifest_files(paths: list[str | Path]) -> list[Path]:
    """The files named, and the manifest files directly inside the folders named (like kubectl -f DIR)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES))
        else:
            files.append(path)
    return files


def load_manifests(paths: list[str | Path]) -> tuple[list[Manifest], list[Problem]]:
    """Parse every switchpoint.dev object from the paths.

    Objects of other API groups are skipped (a folder may hold a whole app);
    anything that is not a Kubernetes object at all is a problem.
    """
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    files = manifest_files(paths)
    if not files:
        problems.append(Problem(", ".join(map(str, paths)), "", "", "no manifest files found"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(Problem(str(path), "", "", "file not found"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), "", "", f"cannot read: {exc}"))
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problems.append(Problem(where, "", "", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
            continue
        for index, doc in enumerate(docs):
            source = f"{path}#{index + 1}" if len(docs) > 1 else str(path)
            for obj in _expand_lists(doc):
                problem = _not_a_manifest(obj)
                if problem:
                    problems.append(Problem(source, "", "", problem))
                elif str(obj["apiVersion"]).split("/")[0] == GROUP:
                    manifests.append(Manifest(source, obj))
    return manifests, problems


def _expand_lists(doc: Any) -> list[Any]:
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return list(doc["items"])
    return [doc]


def _not_a_manifest(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"not a Kubernetes manifest: expected a mapping, found {type(obj).__name__}"
    missing = [k for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        return f"not a Kubernetes manifest: missing {' and '.join(missing)}"
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return "not a Kubernetes manifest: missing metadata.name"
    return None
