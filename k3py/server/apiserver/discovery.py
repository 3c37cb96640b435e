"""API discovery documents, built from the resource table.

Two shapes, as a 1.32 API server serves them:

- aggregated discovery (``apidiscovery.k8s.io`` v2 and v2beta1, same shape): one document for
  ``/api`` (the core group) and one for ``/apis`` (every other group), chosen by the Accept
  header and announced in the response Content-Type's g/v/as parameters — clients recognise
  it only by those;
- legacy discovery: ``/api`` (APIVersions), ``/apis`` (APIGroupList), ``/apis/<g>`` (APIGroup),
  ``/api/v1`` and ``/apis/<g>/<v>`` (APIResourceList, subresources as ``plural/sub``).

Documents are encoded once per table generation (CRDs change the table) and reused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from k3py.api.resources import ResourceInfo, ResourceTable

AGGREGATED_GROUP = "apidiscovery.k8s.io"
AGGREGATED_VERSIONS = ("v2", "v2beta1")


def aggregated_version(accept: str | None) -> str | None:
    """The apidiscovery version the client asked for first, or None for legacy discovery."""
    for entry in (accept or "").split(","):
        params = dict(
            p.strip().split("=", 1) for p in entry.split(";")[1:] if "=" in p
        )
        if params.get("g") == AGGREGATED_GROUP and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in AGGREGATED_VERSIONS:
                return params["v"]
            continue
        if entry.split(";")[0].strip() in ("application/json", "*/*", "application/*", ""):
            return None
    return None


def _storage_version_hash(info: ResourceInfo) -> str:
    digest = hashlib.sha256(f"{info.group}/{info.version}/{info.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def _resource_entry(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    if info.subresources:
        entry["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": {"group": sub.group, "version": sub.version, "kind": sub.kind},
                "verbs": list(sub.verbs),
            }
            for sub in info.subresources
        ]
    return entry


def _group_entry(table: ResourceTable, group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [
            {
                "version": version,
                "resources": [_resource_entry(i) for i in sorted(table.resources(group, version), key=lambda i: i.plural)],
                "freshness": "Current",
            }
            for version in versions
        ],
    }


def _legacy_resources(table: ResourceTable, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for info in sorted(table.resources(group, version), key=lambda i: i.plural):
        entry: dict[str, Any] = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": list(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        entry["storageVersionHash"] = _storage_version_hash(info)
        resources.append(entry)
        for sub in info.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{info.plural}/{sub.name}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if (sub.group, sub.version) != (info.group, info.version):
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


class Discovery:
    """Encoded discovery documents, rebuilt when the resource table changes."""

    def __init__(self, table: ResourceTable) -> None:
        self.table = table
        self._generation = -1
        self._docs: dict[str, bytes] = {}

    def _fresh(self) -> None:
        if self._generation != self.table.generation:
            self._docs = {}
            self._generation = self.table.generation

    def _get(self, key: str, build: Any) -> bytes | None:
        self._fresh()
        if key not in self._docs:
            value = build()
            if value is None:
                return None
            self._docs[key] = orjson.dumps(value)
        return self._docs[key]

    def aggregated(self, core: bool, version: str) -> bytes:
        def build() -> dict[str, Any]:
            groups = [(g, vs) for g, vs in self.table.groups() if (g == "") == core]
            return {
                "kind": "APIGroupDiscoveryList",
                "apiVersion": f"{AGGREGATED_GROUP}/{version}",
                "metadata": {},
                "items": [_group_entry(self.table, g, vs) for g, vs in groups],
            }

        doc = self._get(f"agg/{core}/{version}", build)
        assert doc is not None
        return doc

    def api_versions(self, server_address: str) -> bytes:
        return orjson.dumps(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
            }
        )

    def api_group_list(self) -> bytes:
        def build() -> dict[str, Any]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, vs) for g, vs in self.table.groups() if g],
            }

        doc = self._get("groups", build)
        assert doc is not None
        return doc

    def api_group(self, group: str) -> bytes | None:
        def build() -> dict[str, Any] | None:
            for g, vs in self.table.groups():
                if g == group and g:
                    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(g, vs)}
            return None

        return self._get(f"group/{group}", build)

    def resource_list(self, group: str, version: str) -> bytes | None:
        def build() -> dict[str, Any] | None:
            if not self.table.resources(group, version):
                return None
            return _legacy_resources(self.table, group, version)

        return self._get(f"resources/{group}/{version}", build)
