"""The OpenAPI definitions of the built-in kinds, read from k3py's own data file.

`scripts/gen-api-schemas.py` extracts them at development time from kubernetes-validate's
Kubernetes 1.32 definitions into `k3py/api/data/schemas.json.gz`, already in OpenAPI form
(`#/definitions/<name>` references, one type per schema) and trimmed to the kinds k3py
serves. They carry everything the rest of k3py needs from a schema: descriptions (for
`kubectl explain`), `x-kubernetes-group-version-kind` on top-level kinds, and the patch and
list extensions (`x-kubernetes-patch-strategy`, `-patch-merge-key`, `-list-type`,
`-list-map-keys`) that strategic merge patch and apply follow.

The file is read once, on first use, and shared read-only: callers must not mutate what
these functions return.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources
from typing import Any

REF_PREFIX = "#/definitions/"


@cache
def _document() -> dict[str, Any]:
    data = resources.files("k3py.api").joinpath("data/schemas.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))


def definitions() -> dict[str, dict]:
    """Every definition by its OpenAPI name, e.g. "io.k8s.api.apps.v1.Deployment"."""
    return _document()["definitions"]


def source() -> str:
    """Where the definitions came from (for humans and cache keys)."""
    return str(_document().get("source", ""))


@cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            index[key] = name
    return index


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition of a kind, found by its x-kubernetes-group-version-kind."""
    return _gvk_index().get((group, version, kind))


def resolve(schema: dict | None) -> dict | None:
    """Follow a `$ref` (directly or through a one-element allOf) to its definition."""
    seen = 0
    while isinstance(schema, dict) and seen < 32:
        ref = schema.get("$ref")
        if ref is None:
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
                ref = all_of[0].get("$ref")
        if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
            return schema
        schema = definitions().get(ref[len(REF_PREFIX) :])
        seen += 1
    return schema
