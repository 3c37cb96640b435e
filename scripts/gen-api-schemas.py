#!/usr/bin/env python3
"""Generate k3py/api/data/schemas.json.gz from kubernetes-validate's 1.32 definitions.

kubernetes-validate ships the Kubernetes OpenAPI definitions rewritten as JSON Schema
(2020-12): nullable types as ["object", "null"], `#/$defs/` references, enums pinned on
apiVersion/kind, int-or-string and quantities as oneOf. This script turns them back into
OpenAPI form — one type per schema, `#/definitions/` references, int-or-string as
{"type": "string", "format": "int-or-string"} — and keeps only the definitions reachable from
the kinds k3py serves (and the meta kinds its paths use), so the runtime reads one small file
and never depends on kubernetes-validate's layout.

Run after changing the served kinds:  python scripts/gen-api-schemas.py
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate

from k3py.api.resources import builtin_resources

SOURCE = "v1.32.0-local"
OUT = Path(__file__).resolve().parent.parent / "k3py" / "api" / "data" / "schemas.json.gz"

# Kinds that paths refer to besides the served resources themselves.
EXTRA_ROOTS = [
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
    "io.k8s.apimachinery.pkg.version.Info",
]

REF_PREFIX_IN = "#/$defs/"
REF_PREFIX_OUT = "#/definitions/"


def convert(node: Any, top_level: bool = False) -> Any:
    """One schema node from JSON Schema form back to OpenAPI form."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX_IN):
            out[key] = REF_PREFIX_OUT + value[len(REF_PREFIX_IN):]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) == 1:
                out[key] = types[0]
            elif types:
                out[key] = types
        elif key == "properties" and isinstance(value, dict):
            props = {}
            for name, prop in value.items():
                converted = convert(prop)
                if top_level and name in ("apiVersion", "kind") and isinstance(converted, dict):
                    # kubernetes-validate pins these to one value; upstream does not.
                    converted.pop("enum", None)
                props[name] = converted
            out[key] = props
        else:
            out[key] = convert(value)
    return out


def special(name: str, schema: dict) -> dict:
    """Definitions upstream writes differently from their JSON Schema rendering."""
    if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
        return {
            "description": "IntOrString is a type that can hold an int32 or a string. When used in "
            "JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.",
            "format": "int-or-string",
            "type": "string",
        }
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
        return {
            "description": "Quantity is a fixed-point representation of a number, e.g. 100m or 1Gi.",
            "type": "string",
        }
    return schema


def refs_of(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX_OUT):
                found.add(value[len(REF_PREFIX_OUT):])
            elif not (key == "$ref" and isinstance(value, str)):
                found |= refs_of(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs_of(value)
    return found


def main() -> int:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / SOURCE
    raw = json.loads((base / "_definitions.json").read_text())["$defs"]
    defs = {name: special(name, convert(schema, top_level=True)) for name, schema in raw.items()}

    wanted_gvks: set[tuple[str, str, str]] = set()
    for info in builtin_resources().all():
        wanted_gvks.add((info.group, info.version, info.kind))
        wanted_gvks.add((info.group, info.version, info.list_kind))
        for sub in info.subresources:
            wanted_gvks.add((sub.group, sub.version, sub.kind))
    roots = set(EXTRA_ROOTS)
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")) in wanted_gvks:
                roots.add(name)
    keep: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in keep or name not in defs:
            continue
        keep.add(name)
        todo.extend(refs_of(defs[name]) - keep)
    document = {
        "source": f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''} {SOURCE}".strip(),
        "definitions": {name: defs[name] for name in sorted(keep)},
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"{len(keep)} definitions, {len(data)} bytes JSON, {OUT.stat().st_size} bytes gzipped -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
