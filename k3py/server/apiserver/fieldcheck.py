"""Server-side field validation: unknown and duplicate fields, against the OpenAPI schemas.

``fieldValidation=Strict`` (what kubectl sends with create and apply) turns an unknown or
duplicated field into a 400 "strict decoding error"; ``Warn`` (the default upstream) reports
each one in a ``Warning`` header; ``Ignore`` says nothing. Built-in kinds are checked against their
typed structure (``k3py.api.proto.structure``, the protobuf descriptors upstream's Go types
come from); custom resources against their CRD's ``openAPIV3Schema`` (a schema with
``x-kubernetes-preserve-unknown-fields`` accepts anything below it).

Paths are written as upstream writes them: ``spec.template.spec.containers[0].imagePullPolice``.
"""

from __future__ import annotations

import json
from typing import Any

from k3py.api import schemas
from k3py.api.proto.structure import check_structure
from k3py.api.resources import ResourceInfo

_MAX_REPORTED = 20


def _walk(value: Any, schema: dict | None, path: str, out: list[str], resolve: Any) -> None:
    if len(out) >= _MAX_REPORTED:
        return
    schema = resolve(schema)
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        if props is None:
            if isinstance(additional, dict):
                for k, v in value.items():
                    _walk(v, additional, f"{path}.{k}" if path else k, out, resolve)
            return
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                _walk(v, props[k], sub, out, resolve)
            elif isinstance(additional, dict):
                _walk(v, additional, sub, out, resolve)
            elif additional is True:
                continue
            else:
                out.append(sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _walk(v, items, f"{path}[{i}]", out, resolve)


def unknown_fields(info: ResourceInfo, obj: dict[str, Any], crd_schema: dict | None = None) -> list[str]:
    """Paths of the fields the kind's schema does not define (empty when it has no schema)."""
    out: list[str] = []
    if crd_schema is not None:
        schema = dict(crd_schema)
        props = dict(schema.get("properties") or {})
        meta_ref = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
        for name, sub in (("apiVersion", {"type": "string"}), ("kind", {"type": "string"}), ("metadata", meta_ref)):
            props.setdefault(name, sub)
        if props.get("metadata", {}).get("type") == "object" and "properties" not in props["metadata"]:
            props["metadata"] = meta_ref
        schema["properties"] = props
        _walk(obj, schema, "", out, schemas.resolve)
        return out
    # Built-in kinds: the typed structure (what upstream's strict JSON decoding follows),
    # else their OpenAPI definition.
    report = check_structure(info.api_version, info.kind, obj)
    if report.known:
        return list(report.unknown_fields)
    name = schemas.definition_name(info.group, info.version, info.kind)
    if name is None:
        return out
    _walk(obj, schemas.definitions().get(name), "", out, schemas.resolve)
    return out


def duplicate_fields(body: bytes) -> list[str]:
    """Keys that appear twice in one JSON object of the body (later values win on decode)."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for k, _v in pairs:
            if k in seen and len(found) < _MAX_REPORTED:
                found.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    return found


def strict_error_message(info: ResourceInfo, unknown: list[str], duplicates: list[str]) -> str:
    problems = [f'unknown field "{p}"' for p in unknown] + [f'duplicate field "{d}"' for d in duplicates]
    return (
        f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
        f"strict decoding error: {', '.join(problems)}"
    )
