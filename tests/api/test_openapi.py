"""OpenAPI v2/v3 documents: shape, PATCH operations kubectl looks for, and real kubectl.

The kubectl tests serve the documents (plus the plain discovery documents kubectl needs to
find a kind) from a throw-away HTTP server on loopback, then run stock kubectl against it:
`kubectl explain` must render fields with their descriptions, and `kubectl apply
--validate=strict --dry-run=client` must leave validation to the server (it does so only when
the kind's PATCH operation advertises `fieldValidation`), for kubectl 1.27/1.28 (which read
only the protobuf v2 document) as for 1.32/1.33 (v3). kubectl must be installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from k3py.api import openapi
from k3py.api.apply import ApplyConflict, server_side_apply
from k3py.api.openapi_v2_proto import CONTENT_TYPE, encode_openapi_v2
from k3py.api.patch import apply_strategic_merge_patch, patch_schema_for
from k3py.api.resources import ResourceInfo, ResourceTable, builtin_resources


def _v3(table: ResourceTable, path: str) -> dict:
    raw = openapi.openapi_v3_document(table, path)
    assert raw is not None, path
    return json.loads(raw)


def _resolve(doc: dict, ref: str) -> dict:
    prefix = "#/components/schemas/" if "components" in doc else "#/definitions/"
    assert ref.startswith(prefix), ref
    name = ref[len(prefix):]
    schemas = doc["components"]["schemas"] if "components" in doc else doc["definitions"]
    assert name in schemas, f"dangling reference {ref}"
    return schemas[name]


def _all_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_refs(value)


def test_every_group_version_document_is_complete() -> None:
    table = builtin_resources()
    index = openapi.openapi_v3_index(table)
    expected_paths = {openapi.gv_path(g, v) for g, vs in table.groups() for v in vs}
    assert set(index["paths"]) == expected_paths
    for path, entry in index["paths"].items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{path}?hash=")
        raw = openapi.openapi_v3_document(table, path)
        assert raw is not None
        assert url.split("hash=")[1] == hashlib.sha512(raw).hexdigest().upper()  # content hash
        doc = _v3(table, path)
        assert doc["openapi"].startswith("3.")
        for ref in set(_all_refs(doc)):
            _resolve(doc, ref)  # every reference resolves inside the document
        group, version = (("", path.split("/")[1]) if path.startswith("api/")
                          else tuple(path.split("/")[1:]))
        for info in table.resources(group, version):
            patches = [
                op["patch"] for p, op in doc["paths"].items()
                if "patch" in op and p.endswith(f"/{info.plural}/{{name}}")
            ]
            if "patch" not in info.verbs:
                assert not patches, info.plural
                continue
            assert len(patches) == 1, info.plural
            patch = patches[0]
            assert patch["x-kubernetes-group-version-kind"] == {
                "group": info.group, "version": info.version, "kind": info.kind}
            assert {"name": "fieldValidation", "in": "query"}.items() <= next(
                p for p in patch["parameters"] if p["name"] == "fieldValidation").items()
            assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
            # the kind's schema: found by GVK, with descriptions for explain
            kinds = [s for s in doc["components"]["schemas"].values()
                     if {"group": info.group, "version": info.version, "kind": info.kind}
                     in s.get("x-kubernetes-group-version-kind", [])]
            assert len(kinds) == 1, info.kind
            assert kinds[0]["description"] and "metadata" in kinds[0]["properties"]


def test_explain_relevant_refs_and_patch_extensions() -> None:
    doc = _v3(builtin_resources(), "apis/apps/v1")
    schemas = doc["components"]["schemas"]
    spec = schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    # a $ref with a description sits in an allOf, as upstream writes v3
    assert spec["description"] and spec["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]
    pod_spec = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert pod_spec["containers"]["x-kubernetes-patch-merge-key"] == "name"
    assert pod_spec["containers"]["x-kubernetes-patch-strategy"] == "merge"
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        **schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"], "type": "string", "format": "int-or-string"}
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "io.k8s.api.autoscaling.v1.Scale" in schemas


def test_core_paths_subresources_and_unknown_paths() -> None:
    table = builtin_resources()
    doc = _v3(table, "api/v1")
    paths = doc["paths"]
    assert set(paths["/api/v1/namespaces/{namespace}/pods"]) >= {"get", "post", "delete", "parameters"}
    assert "get" in paths["/api/v1/pods"]
    assert set(paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"]) >= {"get", "post"}
    assert "get" in paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]
    assert "post" in paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]
    assert set(paths["/api/v1/namespaces/{namespace}/bindings"]) == {"post", "parameters"}
    assert "put" in paths["/api/v1/namespaces/{name}/finalize"]
    assert "/api/v1/nodes/{name}" in paths and "/api/v1/namespaces/{namespace}/nodes" not in paths
    ops = [op["operationId"] for p in paths.values() for k, op in p.items() if k != "parameters"]
    assert len(ops) == len(set(ops)), "operation ids must be unique"
    assert "listCoreV1NamespacedPod" in ops and "patchCoreV1NamespacedPodStatus" in ops
    for bad in ("apis/nope/v1", "api/v9", "bogus", "apis/apps", ""):
        assert openapi.openapi_v3_document(table, bad) is None


def test_v2_document() -> None:
    table = builtin_resources()
    doc = json.loads(openapi.openapi_v2(table))
    assert doc["swagger"] == "2.0"
    for ref in set(_all_refs(doc)):
        _resolve(doc, ref)
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert any(p["in"] == "body" for p in patch["parameters"])
    assert "application/strategic-merge-patch+json" in patch["consumes"]


def test_crds_appear_and_caches_follow_the_table() -> None:
    table = builtin_resources()
    before = openapi.openapi_v3_index(table)
    core = openapi.openapi_v3_document(table, "api/v1")
    assert openapi.openapi_v3_document(table, "apis/example.com/v1") is None
    table.add(ResourceInfo("example.com", "v1", "Widget", "widgets", "widget", True,
                           ("create", "delete", "get", "list", "patch", "update", "watch")))
    after = openapi.openapi_v3_index(table)
    assert after["paths"]["api/v1"] == before["paths"]["api/v1"]  # unchanged GVs keep their hash
    assert openapi.openapi_v3_document(table, "api/v1") is core  # ... and are not rebuilt
    assert "apis/example.com/v1" in after["paths"]
    doc = _v3(table, "apis/example.com/v1")
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "example.com", "version": "v1", "kind": "Widget"}
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["x-kubernetes-preserve-unknown-fields"] is True
    assert "com.example.v1.Widget" in json.loads(openapi.openapi_v2(table))["definitions"]
    table.remove("example.com", "v1", "widgets")
    assert openapi.openapi_v3_document(table, "apis/example.com/v1") is None
    assert openapi.openapi_v3_index(table) == before


def test_documents_are_cached() -> None:
    table = builtin_resources()
    first = openapi.openapi_v3_document(table, "api/v1")
    assert openapi.openapi_v3_document(table, "api/v1") is first
    assert openapi.openapi_v2(table) is openapi.openapi_v2(table)


# --- stock kubectl against the documents -----------------------------------------------------


def _discovery(table: ResourceTable, path: str, minor: int = 32) -> dict | None:
    """Plain (non-aggregated) discovery, just enough for kubectl to map kinds to resources.

    /version's minor picks the kubectl the dispatcher on these machines runs (1.27-1.33)."""
    if path == "/version":
        return {"major": "1", "minor": str(minor), "gitVersion": f"v1.{minor}.0"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for group, versions in table.groups():
            if group:
                gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
                groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        group, version = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    infos = table.resources(group, version)
    if not infos:
        return None
    return {
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [{"name": i.plural, "singularName": i.singular, "namespaced": i.namespaced,
                       "kind": i.kind, "verbs": list(i.verbs), "shortNames": list(i.short_names),
                       "categories": list(i.categories)} for i in infos],
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a loopback server for the documents.

    `rewrite` may alter the v3 and v2 documents (JSON, before any protobuf encoding); `objects` maps object paths to objects the server
    answers GETs with and applies strategic merge PATCHes to (with k3py's own patch code),
    recording each patch body in `patches`.
    """
    servers: list[ThreadingHTTPServer] = []

    def start(
        rewrite: Callable[[str, bytes], bytes] | None = None,
        objects: dict[str, dict] | None = None,
        patches: list[Any] | None = None,
        minor: int = 32,
        resources: ResourceTable | None = None,
    ) -> str:
        table = resources if resources is not None else builtin_resources()
        store = objects if objects is not None else {}

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes | None, ctype: str = "application/json") -> None:
                payload = body if body is not None else b"{}"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                body: bytes | None
                if path == "/openapi/v3":
                    body = json.dumps(openapi.openapi_v3_index(table)).encode()
                elif path.startswith("/openapi/v3/"):
                    gv = path[len("/openapi/v3/"):]
                    body = openapi.openapi_v3_document(table, gv)
                    if body is not None and rewrite is not None:
                        body = rewrite(gv, body)
                elif path == "/openapi/v2":
                    protobuf = "protobuf" in self.headers.get("Accept", "")
                    if rewrite is None:
                        body = openapi.openapi_v2_protobuf(table) if protobuf else openapi.openapi_v2(table)
                    else:
                        body = rewrite("v2", openapi.openapi_v2(table))
                        body = encode_openapi_v2(json.loads(body)) if protobuf else body
                    self._send(200, body, CONTENT_TYPE if protobuf else "application/json")
                    return
                elif path in store:
                    body = json.dumps(store[path]).encode()
                else:
                    found = _discovery(table, path, minor)
                    body = json.dumps(found).encode() if found is not None else None
                self._send(200 if body is not None else 404, body)

            def do_PATCH(self) -> None:
                url = urlsplit(self.path)
                path = url.path
                patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if patches is not None:
                    patches.append(patch)
                current = store.get(path)
                if self.headers["Content-Type"] == "application/apply-patch+yaml":
                    self._apply(path, current, patch, parse_qs(url.query))
                    return
                kind = table.by_kind(*_gvk_of(current)) if current else None
                schema = patch_schema_for(kind.group, kind.version, kind.kind) if kind else None
                if current is None or schema is None or \
                        self.headers["Content-Type"] != "application/strategic-merge-patch+json":
                    self._send(415, None)
                    return
                store[path] = apply_strategic_merge_patch(current, patch, schema)
                self._send(200, json.dumps(store[path]).encode())

            def _apply(self, path: str, current: dict | None, applied: dict, query: dict) -> None:
                group, version, kind = _gvk_of(applied)
                try:
                    store[path] = server_side_apply(
                        current, applied, query.get("fieldManager", [""])[0], group=group,
                        version=version, kind=kind, now="2026-01-01T00:00:00Z",
                        force=query.get("force", ["false"])[0] == "true")
                except ApplyConflict as conflict:
                    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": str(conflict), "reason": "Conflict", "code": 409,
                              "details": {"causes": conflict.causes()}}
                    self._send(409, json.dumps(status).encode())
                    return
                self._send(201 if current is None else 200, json.dumps(store[path]).encode())

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _gvk_of(obj: dict) -> tuple[str, str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    return group, version, obj["kind"]


def _kubectl(tmp_path: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is required for the OpenAPI tests"
    cache = tmp_path / f"cache-{server.rsplit(':', 1)[1]}"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "KUBECACHEDIR": str(cache)}
    return subprocess.run([kubectl, "--server", server, *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False, cwd=tmp_path)


@pytest.mark.parametrize("minor", [27, 32])
def test_kubectl_explain_renders_fields(serve: Any, tmp_path: Path, minor: int) -> None:
    server = serve(minor=minor)
    out = _kubectl(tmp_path, server, "explain", "deployment.spec.template.spec.containers")
    assert out.returncode == 0, out.stderr
    assert "KIND:       Deployment" in out.stdout
    assert "FIELD: containers <[]Container>" in out.stdout
    assert "imagePullPolicy\t<string>" in out.stdout
    out = _kubectl(tmp_path, server, "explain", "cronjobs.spec.jobTemplate.spec.template.spec.volumes.configMap")
    assert out.returncode == 0, out.stderr
    assert "FIELD: configMap <ConfigMapVolumeSource>" in out.stdout
    out = _kubectl(tmp_path, server, "explain", "hpa.spec.metrics")
    assert out.returncode == 0 and "VERSION:    v2" in out.stdout, out.stdout + out.stderr


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
bogusField: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  bogusSpecField: 2
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""


@pytest.mark.parametrize("minor", [28, 32, 33])
def test_kubectl_leaves_validation_to_the_server(serve: Any, tmp_path: Path, minor: int) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    server = serve(minor=minor)
    out = _kubectl(tmp_path, server, "apply", "--dry-run=client", "--validate=strict", "-f", "m.yaml")
    assert out.returncode == 0, out.stderr
    assert "configmap/cfg created (dry run)" in out.stdout
    assert "deployment.apps/web created (dry run)" in out.stdout

    # Control: without fieldValidation on PATCH, kubectl validates against the schemas itself.
    def drop_field_validation(_gv: str, body: bytes) -> bytes:
        doc = json.loads(body)
        for item in doc["paths"].values():
            if "patch" in item:
                item["patch"]["parameters"] = [
                    p for p in item["patch"]["parameters"] if p["name"] != "fieldValidation"]
        return json.dumps(doc).encode()

    server = serve(drop_field_validation, minor=minor)
    out = _kubectl(tmp_path, server, "apply", "--dry-run=client", "--validate=strict", "-f", "m.yaml")
    assert out.returncode != 0
    assert 'unknown field "bogusField"' in out.stderr, out.stderr


LAST_APPLIED = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                 {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                 {"name": "log", "image": "busybox"}]}}},
}

NEW_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx:2
        env:
        - {name: B, value: "2"}
        - {name: C, value: "3"}
"""


@pytest.mark.parametrize("minor", [27, 33])
def test_kubectl_apply_three_way_patch_uses_our_schemas(serve: Any, tmp_path: Path, minor: int) -> None:
    """kubectl computes its apply patch from our OpenAPI; our SMP applies it as upstream would."""
    live = json.loads(json.dumps(LAST_APPLIED))
    live["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(LAST_APPLIED)}
    # the server added a container-level default and a sidecar the user never applied
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    live["spec"]["template"]["spec"]["containers"].append({"name": "injected", "image": "proxy"})
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    objects = {path: live}
    patches: list[Any] = []
    server = serve(objects=objects, patches=patches, minor=minor)
    (tmp_path / "d.yaml").write_text(NEW_MANIFEST)
    out = _kubectl(tmp_path, server, "apply", "-f", "d.yaml")
    assert out.returncode == 0, out.stderr
    assert len(patches) == 1
    containers_patch = patches[0]["spec"]["template"]["spec"]
    # kubectl found the merge keys in our schemas: it sent a keyed delete and an order list
    assert {"$patch": "delete", "name": "log"} in containers_patch["containers"]
    assert "$setElementOrder/containers" in containers_patch
    result = objects[path]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in result] == ["app", "injected"]
    assert result[0]["image"] == "nginx:2" and result[0]["imagePullPolicy"] == "IfNotPresent"
    assert result[0]["env"] == [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]


def test_operation_ids_are_upstreams() -> None:
    """The official Python client is generated from upstream's operation ids: ours name the
    same methods (listCoreV1NamespacedPod -> CoreV1Api.list_namespaced_pod)."""
    import re

    from kubernetes import client

    table = builtin_resources()
    for group, versions in table.groups():
        for version in versions:
            base = "Core" if not group else "".join(
                p.capitalize() for p in group.removesuffix(".k8s.io").split("."))
            gv = f"{base}{version.capitalize()}"
            api = getattr(client, f"{gv}Api")
            doc = _v3(table, openapi.gv_path(group, version))
            for item in doc["paths"].values():
                for method, op in item.items():
                    if method == "parameters":
                        continue
                    op_id = op["operationId"]
                    assert gv in op_id, op_id
                    name = op_id.replace(gv, "", 1)
                    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
                    assert hasattr(api, snake), (op_id, snake)


WIDGET_SCHEMA = {
    "type": "object",
    "description": "A Widget turns knobs.",
    "properties": {
        "spec": {
            "type": "object",
            "description": "What the widget should do.",
            "required": ["knobs"],
            "properties": {
                "knobs": {"type": "integer", "description": "How many knobs to turn."},
                "color": {"type": "string", "enum": ["red", "blue"], "description": "The paint."},
                "parts": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string", "description": "Part name."}}}},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def _widgets() -> ResourceTable:
    table = builtin_resources()
    table.add(ResourceInfo("example.com", "v1", "Widget", "widgets", "widget", True,
                           ("create", "delete", "get", "list", "patch", "update", "watch")))
    table.set_schema("example.com", "v1", "Widget", WIDGET_SCHEMA)
    return table


def test_crd_schema_in_documents() -> None:
    table = _widgets()
    before = openapi.openapi_v3_index(table)["paths"]["apis/example.com/v1"]
    doc = _v3(table, "apis/example.com/v1")
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["properties"]["spec"]["properties"]["knobs"]["type"] == "integer"
    assert widget["properties"]["metadata"]["allOf"][0]["$ref"].endswith("ObjectMeta")
    for ref in set(_all_refs(doc)):
        _resolve(doc, ref)
    items = doc["components"]["schemas"]["com.example.v1.WidgetList"]["properties"]["items"]
    assert items["items"] == {"$ref": "#/components/schemas/com.example.v1.Widget"}
    table.set_schema("example.com", "v1", "Widget", None)
    assert openapi.openapi_v3_index(table)["paths"]["apis/example.com/v1"] != before
    assert _v3(table, "apis/example.com/v1")["components"]["schemas"]["com.example.v1.Widget"][
        "x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("minor", [27, 32])
def test_kubectl_explain_custom_resource(serve: Any, tmp_path: Path, minor: int) -> None:
    server = serve(minor=minor, resources=_widgets())
    out = _kubectl(tmp_path, server, "explain", "widgets.spec")
    assert out.returncode == 0, out.stderr
    assert "What the widget should do." in out.stdout
    assert "knobs" in out.stdout and "How many knobs to turn." in out.stdout
    out = _kubectl(tmp_path, server, "explain", "widget.spec.parts.name")
    assert out.returncode == 0 and "Part name." in out.stdout, out.stdout + out.stderr


CHART_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: "{{ .Release.Name }}-cfg"}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: "{{ .Release.Name }}-web"}
spec:
  selector: {matchLabels: {app: web}}
  notAField: 1
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""


def test_helm_validates_against_our_openapi(serve: Any, tmp_path: Path) -> None:
    """`helm template --validate` runs install's checks against the server (no writes)."""
    from tests.cluster import find_helm

    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "all.yaml").write_text(CHART_TEMPLATE)
    releases = {"/api/v1/namespaces/default/secrets": {
        "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}}

    def helm(server: str) -> subprocess.CompletedProcess[str]:
        kubeconfig = tmp_path / f"kc-{server.rsplit(':', 1)[1]}.yaml"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "namespace": "default"}}],
            "users": [{"name": "u", "user": {}}]}))
        env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "cache"), "HELM_CACHE_HOME": str(tmp_path / "hc"),
               "HELM_CONFIG_HOME": str(tmp_path / "hcfg"), "HELM_DATA_HOME": str(tmp_path / "hd")}
        return subprocess.run([find_helm(), "template", "r", str(chart), "--validate",
                               "--kubeconfig", str(kubeconfig)],
                              capture_output=True, text=True, env=env, timeout=120, check=False)

    out = helm(serve(objects=releases))
    assert out.returncode == 0, out.stderr
    assert 'name: "r-web"' in out.stdout

    def drop_field_validation(_gv: str, body: bytes) -> bytes:
        doc = json.loads(body)
        for item in doc["paths"].values():
            if "patch" in item:
                item["patch"]["parameters"] = [
                    p for p in item["patch"]["parameters"] if p["name"] != "fieldValidation"]
        return json.dumps(doc).encode()

    # Control: when the server does not take fieldValidation, Helm checks the schema itself
    out = helm(serve(drop_field_validation, objects=releases))
    assert out.returncode != 0 and "notAField" in out.stderr, out.stderr


SSA_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web, tier: fe}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx}]}
"""


def test_kubectl_server_side_apply_conflicts_and_pruning(serve: Any, tmp_path: Path) -> None:
    """kubectl apply --server-side against k3py's apply: create, conflict, force, field removal."""
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    objects: dict[str, dict] = {}
    server = serve(objects=objects)
    (tmp_path / "d.yaml").write_text(SSA_MANIFEST)
    out = _kubectl(tmp_path, server, "apply", "--server-side", "-f", "d.yaml")
    assert out.returncode == 0 and "deployment.apps/web serverside-applied" in out.stdout, out.stderr
    assert objects[path]["metadata"]["managedFields"][0]["manager"] == "kubectl"

    (tmp_path / "other.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n"
        "spec: {replicas: 5}\n")
    out = _kubectl(tmp_path, server, "apply", "--server-side", "--field-manager=ops", "-f", "other.yaml")
    assert out.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in out.stderr
    assert "--force-conflicts" in out.stderr  # kubectl's advice for FieldManagerConflict causes
    out = _kubectl(tmp_path, server, "apply", "--server-side", "--field-manager=ops",
                   "--force-conflicts", "-f", "other.yaml")
    assert out.returncode == 0, out.stderr
    assert objects[path]["spec"]["replicas"] == 5

    # kubectl drops the tier label (and replicas, now ops'): the label goes, replicas stays
    (tmp_path / "d.yaml").write_text(SSA_MANIFEST.replace(", tier: fe", "").replace("  replicas: 2\n", ""))
    out = _kubectl(tmp_path, server, "apply", "--server-side", "-f", "d.yaml")
    assert out.returncode == 0, out.stderr
    assert objects[path]["metadata"]["labels"] == {"app": "web"}
    assert objects[path]["spec"]["replicas"] == 5
