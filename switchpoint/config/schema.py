"""Validating manifests against the CRDs in crds/, as the API server would.

The CRDs are the single source of the schemas: this module reads their
openAPIV3Schema, applies its defaults, validates structure with JSON Schema
(OpenAPI v3.0 is draft-4 compatible for the keywords a structural schema
uses) and evaluates the x-kubernetes-validations CEL rules with a real CEL
engine, so local mode refuses what `kubectl apply` would refuse, with the
same messages.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import cel
import jsonschema
import yaml

from switchpoint.config.errors import field_path
from switchpoint.overlaps import require


@dataclass(frozen=True)
class SchemaViolation:
    path: str
    message: str


@dataclass(frozen=True)
class CustomResourceSchema:
    kind: str
    schema: dict[str, Any]
    validator: jsonschema.Draft4Validator


@functools.cache
def crd_documents() -> tuple[dict[str, Any], ...]:
    """Every CustomResourceDefinition shipped in crds/."""
    folder = resources.files("switchpoint.crds")
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(entry.read_text(encoding="utf-8")) if d)
    return tuple(docs)


@functools.cache
def schema_for(kind: str, version: str) -> CustomResourceSchema | None:
    for crd in crd_documents():
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for ver in crd["spec"]["versions"]:
            if ver["name"] == version and ver.get("served", False):
                schema = ver["schema"]["openAPIV3Schema"]
                return CustomResourceSchema(kind, schema, jsonschema.Draft4Validator(schema))
    return None


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in `default`s of a structural schema, recursively (a copy; the input is unchanged)."""
    value = copy.deepcopy(value)
    _default_into(schema, value)
    return value


def _default_into(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_into(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in (schema.get("properties") or {}):
                    _default_into(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_into(schema["items"], item)


def validate(resource: CustomResourceSchema, obj: dict[str, Any]) -> tuple[dict[str, Any], list[SchemaViolation]]:
    """Default the object, then report every schema and CEL violation (structural ones first)."""
    defaulted = apply_defaults(resource.schema, obj)
    violations = _unknown_fields(resource.schema, defaulted, ())
    violations += [
        _violation(err)
        for err in sorted(resource.validator.iter_errors(defaulted), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if not violations:
        violations = _cel_violations(resource.schema, defaulted, ())
    return defaulted, violations


def _unknown_fields(schema: dict[str, Any], value: Any, path: tuple[str | int, ...]) -> list[SchemaViolation]:
    """Fields the schema does not declare (kubectl's strict field validation refuses them too)."""
    found: list[SchemaViolation] = []
    props = schema.get("properties")
    if isinstance(value, dict) and props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for name, sub in value.items():
            if name not in props and "additionalProperties" not in schema:
                found.append(SchemaViolation(field_path((*path, name)), "unknown field"))
            elif name in props:
                found.extend(_unknown_fields(props[name], sub, (*path, name)))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found.extend(_unknown_fields(schema["items"], item, (*path, index)))
    return found


def _violation(err: jsonschema.ValidationError) -> SchemaViolation:
    path = list(err.absolute_path)
    missing = re.match(r"^'(.+)' is a required property$", err.message)
    if err.validator == "required" and missing:
        return SchemaViolation(field_path([*path, missing.group(1)]), "required field is missing")
    return SchemaViolation(field_path(path), err.message)


def _cel_violations(schema: dict[str, Any], value: Any, path: tuple[str | int, ...]) -> list[SchemaViolation]:
    found: list[SchemaViolation] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if not _cel_holds(rule["rule"], value):
            found.append(SchemaViolation(field_path(path), rule.get("message") or f"failed rule: {rule['rule']}"))
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                found.extend(_cel_violations(sub, value[name], (*path, name)))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found.extend(_cel_violations(schema["items"], item, (*path, index)))
    return found


@functools.lru_cache(maxsize=256)
def _compiled(rule: str) -> Any:
    require(hasattr(cel, "compile"), "common-expression-language's cel module (needed for the CRDs' CEL rules)")
    return cel.compile(rule)


def _cel_holds(rule: str, value: Any) -> bool:
    try:
        return bool(_compiled(rule).execute({"self": value}))
    except (TypeError, ValueError, RuntimeError):
        # A rule that cannot be evaluated on this value is a failed rule, as in the API server.
        return False
