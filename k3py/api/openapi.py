"""OpenAPI v2 and v3 documents for the served resources, as clients expect them.

kubectl apply/create, `kubectl explain` and Helm fetch the API server's OpenAPI before they
write anything: `/openapi/v3` (an index of per-group-version documents) first,
`/openapi/v2` (one document for everything) as the fallback. What they need from it:

* per kind, a PATCH operation tagged with `x-kubernetes-group-version-kind` that takes a
  `fieldValidation` query parameter — then kubectl and Helm leave validation to the server
  instead of checking objects against the schema themselves;
* the kinds' schemas (`components/schemas` in v3, `definitions` in v2) with descriptions,
  `x-kubernetes-group-version-kind` on top-level kinds and the patch extensions, for
  `kubectl explain` and for kubectl's client-side three-way strategic merge patch.

Schemas come from `k3py.api.schemas` (Kubernetes 1.32 definitions); paths are generated from
the ResourceTable, so they follow CRDs as they come and go. A custom resource is described by
the schema its CRD declares (`ResourceTable.set_schema`) — or, without one, as an open object —
tagged with its GVK. v2 also comes as gnostic protobuf (`openapi_v2_protobuf`), the only form
kubectl up to 1.28 reads. Documents are large and built lazily — once per table generation
and group-version — and cached; the v3 index's `?hash=` is the SHA-512 of each document, so a
client may cache a document for as long as its URL is served.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from dataclasses import asdict
from typing import Any

from k3py import KUBERNETES_VERSION
from k3py.api import schemas
from k3py.api.openapi_v2_proto import encode_openapi_v2
from k3py.api.resources import ResourceInfo, ResourceTable

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STATUS = META + "Status"
DELETE_OPTIONS = META + "DeleteOptions"
PATCH = META + "Patch"
WATCH_EVENT = META + "WatchEvent"
RESOURCE_LIST = META + "APIResourceList"

JSON_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


# --- naming ---------------------------------------------------------------------------------


def gv_path(group: str, version: str) -> str:
    """"api/v1" for the core group, "apis/<group>/<version>" otherwise."""
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _parse_gv_path(path: str) -> tuple[str, str] | None:
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return parts[1], parts[2]
    return None


def _camel_group(group: str) -> str:
    if not group:
        return "Core"
    trimmed = group.removesuffix(".k8s.io")
    return "".join(p[:1].upper() + p[1:] for p in trimmed.split("."))


def _tag(group: str, version: str) -> str:
    base = group.removesuffix(".k8s.io").replace(".", "_") if group else "core"
    return f"{base}_{version}"


def definition_name(info: ResourceInfo, list_kind: bool = False) -> str:
    """The schema name of a resource's kind (or list kind)."""
    kind = info.list_kind if list_kind else info.kind
    found = schemas.definition_name(info.group, info.version, kind)
    if found is not None:
        return found
    # Custom resources: upstream's reversed-group naming, "com.example.v1.Widget".
    reversed_group = ".".join(reversed(info.group.split("."))) if info.group else "core"
    return f"{reversed_group}.{info.version}.{kind}"


def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "kind": kind, "version": version}


# --- parameters -----------------------------------------------------------------------------

_PARAM_DOCS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "Ask for BOOKMARK watch events."),
    "continue": ("string", "The continue token of the previous page of a list."),
    "fieldSelector": ("string", "Restrict the returned objects by their fields."),
    "labelSelector": ("string", "Restrict the returned objects by their labels."),
    "limit": ("integer", "The maximum number of objects of a list page."),
    "resourceVersion": ("string", "The resource version the request must be served at or after."),
    "resourceVersionMatch": ("string", "How resourceVersion applies to a list."),
    "sendInitialEvents": ("boolean", "Start a watch with synthetic ADDED events for existing objects."),
    "timeoutSeconds": ("integer", "How long a list or watch call may last."),
    "watch": ("boolean", "Watch for changes instead of listing."),
    "dryRun": ("string", "All: process the request without persisting it."),
    "fieldManager": ("string", "The name of the actor making the change (server-side apply)."),
    "fieldValidation": (
        "string",
        "Ignore, Warn or Strict: what the server does with unknown or duplicate fields.",
    ),
    "force": ("boolean", "Force an apply patch, taking over conflicting fields."),
    "gracePeriodSeconds": ("integer", "Seconds before the object is deleted."),
    "ignoreStoreReadErrorWithClusterBreakingPotential": (
        "boolean",
        "Delete an object even though it cannot be read from storage.",
    ),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": ("string", "Orphan, Background or Foreground garbage collection."),
    "pretty": ("string", "Pretty-print the output."),
    "container": ("string", "The container to use."),
    "follow": ("boolean", "Stream the log as it grows."),
    "insecureSkipTLSVerifyBackend": ("boolean", "Do not verify the kubelet's serving certificate."),
    "limitBytes": ("integer", "Stop after this many bytes of log."),
    "previous": ("boolean", "The log of the previous, terminated container."),
    "sinceSeconds": ("integer", "Only log lines newer than this many seconds."),
    "stream": ("string", "All, Stdout or Stderr."),
    "tailLines": ("integer", "Only this many lines from the end of the log."),
    "timestamps": ("boolean", "Prefix every log line with its RFC 3339 timestamp."),
    "command": ("string", "The command to run."),
    "stdin": ("boolean", "Attach stdin."),
    "stdout": ("boolean", "Attach stdout."),
    "stderr": ("boolean", "Attach stderr."),
    "tty": ("boolean", "Allocate a terminal."),
    "ports": ("integer", "Ports to forward."),
    "path": ("string", "The path of the proxied request."),
}

LIST_PARAMS = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
)
WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
PATCH_PARAMS = (*WRITE_PARAMS, "force")
DELETE_PARAMS = (
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
)
CONNECT_PARAMS: dict[str, tuple[str, ...]] = {
    "log": (
        "container",
        "follow",
        "insecureSkipTLSVerifyBackend",
        "limitBytes",
        "previous",
        "sinceSeconds",
        "stream",
        "tailLines",
        "timestamps",
    ),
    "exec": ("command", "container", "stderr", "stdin", "stdout", "tty"),
    "attach": ("container", "stderr", "stdin", "stdout", "tty"),
    "portforward": ("ports",),
    "proxy": ("path",),
}


def _query(name: str, v3: bool) -> dict:
    typ, desc = _PARAM_DOCS[name]
    param: dict[str, Any] = {"name": name, "in": "query", "description": desc}
    if v3:
        param["schema"] = {"type": typ, "uniqueItems": True}
    else:
        param["type"] = typ
        param["uniqueItems"] = True
    return param


def _path_param(name: str, desc: str, v3: bool) -> dict:
    param: dict[str, Any] = {"name": name, "in": "path", "description": desc, "required": True}
    if v3:
        param["schema"] = {"type": "string", "uniqueItems": True}
    else:
        param["type"] = "string"
        param["uniqueItems"] = True
    return param


# --- operations -----------------------------------------------------------------------------


class _Builder:
    """Builds the paths of a set of resources, in v2 or v3 form."""

    def __init__(self, v3: bool) -> None:
        self.v3 = v3
        self.prefix = "#/components/schemas/" if v3 else "#/definitions/"
        self.paths: dict[str, dict] = {}
        self.roots: set[str] = {STATUS, DELETE_OPTIONS, PATCH, WATCH_EVENT, RESOURCE_LIST}

    def ref(self, name: str) -> dict:
        self.roots.add(name)
        return {"$ref": self.prefix + name}

    def _responses(self, schema: dict | None, codes: tuple[str, ...] = ("200",)) -> dict:
        text = {"200": "OK", "201": "Created", "202": "Accepted"}
        out: dict[str, Any] = {}
        for code in codes:
            entry: dict[str, Any] = {"description": text[code]}
            if schema is not None:
                if self.v3:
                    entry["content"] = {t: {"schema": schema} for t in JSON_TYPES}
                else:
                    entry["schema"] = schema
            out[code] = entry
        out["401"] = {"description": "Unauthorized"}
        return out

    def _body(self, schema: dict, types: tuple[str, ...] = JSON_TYPES) -> dict:
        if self.v3:
            return {"requestBody": {"content": {t: {"schema": schema} for t in types}, "required": True}}
        return {}

    def _op(
        self,
        action: str,
        op_id: str,
        tag: str,
        gvk: dict,
        params: tuple[str, ...],
        responses: dict,
        description: str,
        body: dict | None = None,
        body_types: tuple[str, ...] = JSON_TYPES,
    ) -> dict:
        op: dict[str, Any] = {
            "description": description,
            "operationId": op_id,
            "tags": [tag],
            "parameters": [_query(p, self.v3) for p in params],
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }
        if body is not None:
            if self.v3:
                op.update(self._body(body, body_types))
            else:
                op["parameters"].insert(0, {"name": "body", "in": "body", "required": True, "schema": body})
                op["consumes"] = list(body_types)
        if not self.v3:
            op["produces"] = list(JSON_TYPES)
            op["schemes"] = ["https"]
        return op

    def add_resource(self, info: ResourceInfo) -> None:
        group_camel = _camel_group(info.group) + info.version.capitalize()
        tag = _tag(info.group, info.version)
        gvk = _gvk(info.group, info.version, info.kind)
        kind = info.kind
        obj = self.ref(definition_name(info))
        lst = self.ref(definition_name(info, list_kind=True))
        base = f"/{gv_path(info.group, info.version)}"
        ns_word = "Namespaced" if info.namespaced else ""
        collection = (
            f"{base}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{base}/{info.plural}"
        )
        item = f"{collection}/{{name}}"
        common = [_query("pretty", self.v3)]
        if info.namespaced:
            common.insert(0, _path_param("namespace", "object name and auth scope", self.v3))
        verbs = set(info.verbs)

        coll_ops: dict[str, Any] = {}
        if "list" in verbs:
            coll_ops["get"] = self._op(
                "list", f"list{group_camel}{ns_word}{kind}", tag, gvk, LIST_PARAMS,
                self._responses(lst), f"list or watch objects of kind {kind}",
            )
        if "create" in verbs:
            coll_ops["post"] = self._op(
                "post", f"create{group_camel}{ns_word}{kind}", tag, gvk, WRITE_PARAMS,
                self._responses(obj, ("200", "201", "202")), f"create a {kind}", body=obj,
            )
        if "deletecollection" in verbs:
            coll_ops["delete"] = self._op(
                "deletecollection", f"delete{group_camel}Collection{ns_word}{kind}", tag, gvk,
                (*DELETE_PARAMS, *LIST_PARAMS), self._responses(self.ref(STATUS)),
                f"delete collection of {kind}", body=self.ref(DELETE_OPTIONS),
            )
        if coll_ops:
            self.paths[collection] = {**coll_ops, "parameters": common}
        if info.namespaced and "list" in verbs:
            self.paths[f"{base}/{info.plural}"] = {
                "get": self._op(
                    "list", f"list{group_camel}{kind}ForAllNamespaces", tag, gvk, LIST_PARAMS,
                    self._responses(lst), f"list or watch objects of kind {kind}",
                ),
                "parameters": [_query("pretty", self.v3)],
            }

        item_ops: dict[str, Any] = {}
        if "get" in verbs:
            item_ops["get"] = self._op(
                "get", f"read{group_camel}{ns_word}{kind}", tag, gvk, (),
                self._responses(obj), f"read the specified {kind}",
            )
        if "update" in verbs:
            item_ops["put"] = self._op(
                "put", f"replace{group_camel}{ns_word}{kind}", tag, gvk, WRITE_PARAMS,
                self._responses(obj, ("200", "201")), f"replace the specified {kind}", body=obj,
            )
        if "patch" in verbs:
            item_ops["patch"] = self._op(
                "patch", f"patch{group_camel}{ns_word}{kind}", tag, gvk, PATCH_PARAMS,
                self._responses(obj, ("200", "201")), f"partially update the specified {kind}",
                body=self.ref(PATCH), body_types=PATCH_TYPES,
            )
        if "delete" in verbs:
            item_ops["delete"] = self._op(
                "delete", f"delete{group_camel}{ns_word}{kind}", tag, gvk, DELETE_PARAMS,
                self._responses(self.ref(STATUS), ("200", "202")), f"delete a {kind}",
                body=self.ref(DELETE_OPTIONS),
            )
        item_params = [_path_param("name", f"name of the {kind}", self.v3), *common]
        if item_ops:
            self.paths[item] = {**item_ops, "parameters": item_params}

        for sub in info.subresources:
            self._add_subresource(info, sub.name, sub.group, sub.version, sub.kind, sub.verbs,
                                  item, item_params, group_camel, ns_word, tag)

    def _add_subresource(
        self, info: ResourceInfo, name: str, group: str, version: str, kind: str,
        verbs: tuple[str, ...], item: str, item_params: list, group_camel: str,
        ns_word: str, tag: str,
    ) -> None:
        suffix = f"{info.kind}{name[:1].upper()}{name[1:]}"
        gvk = _gvk(group, version, kind)
        path = f"{item}/{name}"
        ops: dict[str, Any] = {}
        if name in CONNECT_PARAMS and name != "log":
            methods = {"get": "Get", "post": "Post", "put": "Put", "patch": "Patch", "delete": "Delete"}
            wanted = {"create": "post", "get": "get", "update": "put", "patch": "patch", "delete": "delete"}
            for verb in verbs:
                method = wanted.get(verb)
                if method is None:
                    continue
                ops[method] = self._op(
                    "connect", f"connect{group_camel}{methods[method]}{ns_word}{suffix}", tag,
                    _gvk(info.group, info.version, kind), CONNECT_PARAMS[name],
                    self._responses({"type": "string"}), f"connect {method.upper()} requests to {name} of {info.kind}",
                )
            if ops:
                self.paths[path] = {**ops, "parameters": item_params}
            return
        schema_name = schemas.definition_name(group, version, kind)
        schema = self.ref(schema_name) if schema_name else {"type": "object"}
        if name == "log":
            ops["get"] = self._op(
                "get", f"read{group_camel}{ns_word}{suffix}", tag, gvk, CONNECT_PARAMS["log"],
                self._responses({"type": "string"}), f"read log of the specified {info.kind}",
            )
        if "get" in verbs and name != "log":
            ops["get"] = self._op(
                "get", f"read{group_camel}{ns_word}{suffix}", tag, gvk, (),
                self._responses(schema), f"read {name} of the specified {info.kind}",
            )
        if "update" in verbs:
            ops["put"] = self._op(
                "put", f"replace{group_camel}{ns_word}{suffix}", tag, gvk, WRITE_PARAMS,
                self._responses(schema, ("200", "201")), f"replace {name} of the specified {info.kind}",
                body=schema,
            )
        if "patch" in verbs:
            ops["patch"] = self._op(
                "patch", f"patch{group_camel}{ns_word}{suffix}", tag, gvk, PATCH_PARAMS,
                self._responses(schema, ("200", "201")), f"partially update {name} of the specified {info.kind}",
                body=self.ref(PATCH), body_types=PATCH_TYPES,
            )
        if "create" in verbs:
            ops["post"] = self._op(
                "post", f"create{group_camel}{ns_word}{suffix}", tag, gvk, WRITE_PARAMS,
                self._responses(schema, ("200", "201", "202")), f"create {name} of a {info.kind}",
                body=schema,
            )
        if ops:
            self.paths[path] = {**ops, "parameters": item_params}


# --- schemas --------------------------------------------------------------------------------


_TYPE_META = {
    "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
    "kind": {"type": "string", "description": "The REST resource this object represents."},
}


def _custom_schema(info: ResourceInfo, list_kind: bool, crd_schema: dict | None) -> dict:
    """A custom resource's component: the CRD's schema (if the table has it) with the type
    and object metadata every object carries, or an open object."""
    kind = info.list_kind if list_kind else info.kind
    gvk = [_gvk(info.group, info.version, kind)]
    if list_kind:
        return {
            "description": f"{kind} is a list of {info.kind}.",
            "type": "object",
            "required": ["items"],
            "properties": {
                **_TYPE_META,
                "items": {"type": "array", "description": f"List of {info.plural}.",
                          "items": {"$ref": schemas.REF_PREFIX + definition_name(info)}},
                "metadata": {"$ref": schemas.REF_PREFIX + META + "ListMeta",
                             "description": "Standard list metadata."},
            },
            "x-kubernetes-group-version-kind": gvk,
        }
    if not crd_schema:
        return {
            "description": f"{kind} is a custom resource of {info.group}.",
            "type": "object",
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-preserve-unknown-fields": True,
        }
    schema = json.loads(json.dumps(crd_schema))
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    schema["properties"] = {
        **props,
        **_TYPE_META,
        "metadata": {"$ref": schemas.REF_PREFIX + META + "ObjectMeta",
                     "description": "Standard object's metadata."},
    }
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = gvk
    return schema


def _closure(roots: set[str], extra: dict[str, dict]) -> dict[str, dict]:
    """Every definition reachable from `roots` (builtin or custom)."""
    defs = schemas.definitions()
    out: dict[str, dict] = {}
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        schema = extra.get(name) or defs.get(name)
        if schema is None:
            continue
        out[name] = schema
        todo.extend(_refs(schema) - out.keys())
    return dict(sorted(out.items()))


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(schemas.REF_PREFIX):
            found.add(ref[len(schemas.REF_PREFIX) :])
        for key, value in node.items():
            if not (key == "$ref" and isinstance(value, str)):
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _to_v3(node: Any) -> Any:
    """A v2-style schema in v3 form: refs to components; a $ref with siblings in an allOf."""
    if isinstance(node, list):
        return [_to_v3(n) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    # A "$ref" key holding a schema is a property of that name (JSONSchemaProps has one).
    out = {k: _to_v3(v) for k, v in node.items() if not (k == "$ref" and isinstance(v, str))}
    if isinstance(ref, str):
        target = "#/components/schemas/" + ref.removeprefix(schemas.REF_PREFIX)
        if out:
            out["allOf"] = [{"$ref": target}]
        else:
            out = {"$ref": target}
    return out


def _custom_extras(table: ResourceTable, infos: list[ResourceInfo]) -> dict[str, dict]:
    extras: dict[str, dict] = {}
    for info in infos:
        crd_schema = table.schema(info.group, info.version, info.kind)
        if schemas.definition_name(info.group, info.version, info.kind) is None:
            extras[definition_name(info)] = _custom_schema(info, False, crd_schema)
        if schemas.definition_name(info.group, info.version, info.list_kind) is None:
            extras[definition_name(info, list_kind=True)] = _custom_schema(info, True, None)
    return extras


_INFO = {"title": "Kubernetes", "version": KUBERNETES_VERSION}


def _build_v2(table: ResourceTable) -> bytes:
    builder = _Builder(v3=False)
    infos = table.all()
    for info in infos:
        builder.add_resource(info)
    definitions = _closure(builder.roots | set(schemas.definitions()), _custom_extras(table, infos))
    document = {
        "swagger": "2.0",
        "info": _INFO,
        "paths": dict(sorted(builder.paths.items())),
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {"description": "Bearer Token authentication", "type": "apiKey",
                            "name": "authorization", "in": "header"}
        },
        "security": [{"BearerToken": []}],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _build_v3(table: ResourceTable, group: str, version: str) -> bytes | None:
    infos = table.resources(group, version)
    if not infos:
        return None
    builder = _Builder(v3=True)
    for info in infos:
        builder.add_resource(info)
    components = _closure(builder.roots, _custom_extras(table, infos))
    document = {
        "openapi": "3.0.0",
        "info": _INFO,
        "paths": dict(sorted(builder.paths.items())),
        "components": {
            "schemas": {name: _to_v3(schema) for name, schema in components.items()},
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                "name": "authorization", "in": "header"}
            },
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


class _Cache:
    def __init__(self) -> None:
        self.generation = -1
        self.v2: bytes | None = None
        self.v2_protobuf: bytes | None = None
        self.v3: dict[str, bytes | None] = {}
        self.index: dict | None = None


_caches: weakref.WeakKeyDictionary[ResourceTable, _Cache] = weakref.WeakKeyDictionary()
# v3 documents by what they are built from, kept across table generations: a CRD coming or
# going rebuilds its own group-version's document, not every other one.
_v3_by_inputs: weakref.WeakKeyDictionary[ResourceTable, dict[str, bytes | None]] = (
    weakref.WeakKeyDictionary()
)
_MAX_REMEMBERED_DOCUMENTS = 256


def _v3_inputs(table: ResourceTable, group: str, version: str) -> str:
    infos = table.resources(group, version)
    return json.dumps(
        [group, version, [asdict(i) for i in infos], [table.schema(i.group, i.version, i.kind) for i in infos]],
        sort_keys=True,
        default=str,
    )


def _v3_cached(table: ResourceTable, cache: _Cache, path: str, group: str, version: str) -> bytes | None:
    if path not in cache.v3:
        remembered = _v3_by_inputs.setdefault(table, {})
        inputs = _v3_inputs(table, group, version)
        if inputs not in remembered:
            if len(remembered) >= _MAX_REMEMBERED_DOCUMENTS:
                remembered.clear()
            remembered[inputs] = _build_v3(table, group, version)
        cache.v3[path] = remembered[inputs]
    return cache.v3[path]
_lock = threading.Lock()


def _cache_for(table: ResourceTable) -> _Cache:
    cache = _caches.get(table)
    if cache is None or cache.generation != table.generation:
        cache = _Cache()
        cache.generation = table.generation
        _caches[table] = cache
    return cache


def openapi_v2(table: ResourceTable) -> bytes:
    """The whole OpenAPI v2 (swagger) document as JSON bytes."""
    with _lock:
        cache = _cache_for(table)
        if cache.v2 is None:
            cache.v2 = _build_v2(table)
        return cache.v2


def openapi_v2_protobuf(table: ResourceTable) -> bytes:
    """The OpenAPI v2 document as gnostic protobuf, for clients that ask for it (kubectl <= 1.28
    sends `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`); answer it with
    Content-Type `openapi_v2_proto.CONTENT_TYPE`."""
    document = openapi_v2(table)
    with _lock:
        cache = _cache_for(table)
        if cache.v2_protobuf is None:
            cache.v2_protobuf = encode_openapi_v2(json.loads(document))
        return cache.v2_protobuf


def openapi_v3_index(table: ResourceTable) -> dict:
    """{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}, ...}}"""
    with _lock:
        cache = _cache_for(table)
        if cache.index is None:
            paths = {}
            for group, versions in table.groups():
                for version in versions:
                    path = gv_path(group, version)
                    body = _v3_cached(table, cache, path, group, version) or b""
                    # upstream's ETag: the SHA-512 of the document, in upper-case hex
                    digest = hashlib.sha512(body).hexdigest().upper()
                    paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            cache.index = {"paths": paths}
        return json.loads(json.dumps(cache.index))


def openapi_v3_document(table: ResourceTable, gv_path: str) -> bytes | None:
    """The OpenAPI v3 document of one group-version ("api/v1", "apis/apps/v1"), or None."""
    parsed = _parse_gv_path(gv_path)
    if parsed is None:
        return None
    with _lock:
        return _v3_cached(table, _cache_for(table), gv_path.strip("/"), *parsed)
