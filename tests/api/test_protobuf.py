"""Kubernetes protobuf bodies decode to the JSON Kubernetes itself would produce.

The end-to-end tests run the real kubectl: each typed `kubectl create ...` is pointed at a tiny
recording HTTP server on loopback (`--dry-run=server`, so kubectl sends its protobuf body), and
the decoded body must equal what the same kubectl prints for `--dry-run=client -o json` (Go's
JSON of the very same object; its `null`s are dropped, as k3py never produces them). The unit
tests build bodies with a hand-written encoder, independent of the decoder.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.api.defaults import apply_defaults
from k3py.api.protobuf import ProtobufError, _go_duration, decode_k8s_protobuf, is_k8s_protobuf
from k3py.api.resources import builtin_resources
from k3py.api.validation import validate_object
from tests.cluster import find_helm

# ------------------------------------------------------------------ a recording fake API server


_KINDS = {
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "deployments": "Deployment",
    "jobs": "Job",
    "cronjobs": "CronJob",
    "services": "Service",
    "namespaces": "Namespace",
    "serviceaccounts": "ServiceAccount",
    "roles": "Role",
    "clusterrolebindings": "ClusterRoleBinding",
    "rolebindings": "RoleBinding",
    "clusterroles": "ClusterRole",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "resourcequotas": "ResourceQuota",
    "priorityclasses": "PriorityClass",
    "ingresses": "Ingress",
}


_APPS_V1 = {"groupVersion": "apps/v1", "version": "v1"}
_AUTOSCALING_V1 = {"groupVersion": "autoscaling/v1", "version": "v1"}
_DISCOVERY: dict[str, dict[str, Any]] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {"name": "apps", "versions": [_APPS_V1], "preferredVersion": _APPS_V1},
            {
                "name": "autoscaling",
                "versions": [_AUTOSCALING_V1],
                "preferredVersion": _AUTOSCALING_V1,
            },
        ],
    },
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
            }
        ],
    },
    "/apis/apps/v1": {
        "kind": "APIResourceList",
        "groupVersion": "apps/v1",
        "resources": [
            {
                "name": "deployments",
                "singularName": "deployment",
                "namespaced": True,
                "kind": "Deployment",
                "verbs": ["get", "list"],
            },
            {
                "name": "deployments/scale",
                "group": "autoscaling",
                "version": "v1",
                "namespaced": True,
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            },
        ],
    },
    "/apis/autoscaling/v1": {
        "kind": "APIResourceList",
        "groupVersion": "autoscaling/v1",
        "resources": [
            {
                "name": "horizontalpodautoscalers",
                "singularName": "horizontalpodautoscaler",
                "namespaced": True,
                "kind": "HorizontalPodAutoscaler",
                "verbs": ["create", "get", "list"],
            }
        ],
    },
}
# `kubectl autoscale` reads its target first.
_WEB_DEPLOYMENT = {
    "kind": "Deployment",
    "apiVersion": "apps/v1",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
    },
}


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, minor: str = "32") -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.minor = minor  # the kubectl dispatcher runs the kubectl of the minor we report
        self.bodies: list[tuple[str, str, bytes]] = []
        self.user_agents: list[str] = []


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/version":
            minor = self.server.minor
            self._reply(200, {"major": "1", "minor": minor, "gitVersion": f"v1.{minor}.0"})
        elif path in _DISCOVERY:  # `create role --resource=...` maps resources via discovery
            self._reply(200, _DISCOVERY[path])
        elif path == "/apis/apps/v1/namespaces/default/deployments/web":
            self._reply(200, _WEB_DEPLOYMENT)
        elif path.endswith("/secrets"):  # Helm looks for earlier releases first
            self._reply(
                200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
            )
        else:
            self._reply(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            )

    def do_POST(self) -> None:
        self._record(201)

    def do_PUT(self) -> None:
        self._record(200)

    def _record(self, code: int) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.bodies.append((self.path, self.headers.get("Content-Type", ""), body))
        self.server.user_agents.append(self.headers.get("User-Agent", ""))
        # The clients only print the name of what comes back; the decoder is not involved here.
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if parts[-1] == "token":  # serviceaccounts/x/token answers a TokenRequest
            token = {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {},
            }
            token["status"] = {
                "token": "header.payload.signature",
                "expirationTimestamp": "2030-01-01T00:00:00Z",
            }
            self._reply(201, token)
            return
        api_version = "v1" if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
        kind = _KINDS[parts[-1] if code == 201 else parts[-2]]
        self._reply(code, {"kind": kind, "apiVersion": api_version, "metadata": {"name": "x"}})


@contextlib.contextmanager
def _serving(minor: str) -> Iterator[_Recorder]:
    server = _Recorder(minor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# kubectl 1.32 and 1.33 are the versions whose typed commands send protobuf.
@pytest.fixture(scope="module", params=["32", "33"])
def recorder(request: pytest.FixtureRequest) -> Iterator[_Recorder]:
    with _serving(request.param) as server:
        yield server


@pytest.fixture(scope="module")
def helm_recorder() -> Iterator[_Recorder]:
    with _serving("32") as server:
        yield server


@pytest.fixture(scope="module")
def kubectl(recorder: _Recorder, tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is required for the protobuf end-to-end tests"
    cache = tmp_path_factory.mktemp("kubectl-cache")
    kubeconfig = tmp_path_factory.mktemp("kubeconfig") / "config"
    kubeconfig.write_text("")
    port = recorder.server_address[1]

    def run(*args: str) -> str:
        cmd = [
            binary,
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={cache}",
            f"--server=http://127.0.0.1:{port}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc.stdout

    return run


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


CREATE_COMMANDS = [
    ["configmap", "cfg", "--from-literal=a=b", "--from-literal=empty="],
    ["secret", "generic", "sec", "--from-literal=password=s3cr\x01t", "--type=Opaque"],
    ["secret", "generic", "plain", "--from-literal=k=v"],
    ["configmap", "blob", "--from-file=blob.bin={blob}", "--from-literal=text=hi"],
    ["deployment", "web", "--image=nginx:1.25", "--replicas=0", "--port=8080"],
    ["deployment", "two", "--image=nginx", "--image=redis:7"],
    ["job", "once", "--image=busybox", "--", "sh", "-c", "echo hi"],
    ["cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"],
    ["service", "clusterip", "svc", "--tcp=80:8080", "--tcp=443:https"],
    ["service", "nodeport", "np", "--tcp=80:80", "--node-port=30080"],
    ["namespace", "team-a"],
    ["serviceaccount", "robot"],
    ["role", "reader", "--verb=get,list", "--resource=pods,deployments.apps"],
    # (no --user: the kubectl dispatcher takes it for its own kubeconfig-user flag)
    [
        "clusterrolebinding",
        "devs-view",
        "--clusterrole=view",
        "--group=devs",
        "--serviceaccount=default:robot",
    ],
    ["rolebinding", "edit", "--role=reader", "--group=devs"],
    [
        "secret",
        "docker-registry",
        "reg",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
    ],
    ["service", "externalname", "ext", "--external-name=db.example.com"],
    ["service", "loadbalancer", "lb", "--tcp=443:8443"],
    ["poddisruptionbudget", "pdb2", "--selector=app=db", "--max-unavailable=1"],
    ["clusterrole", "agg", "--aggregation-rule=rbac.example.com/aggregate-to-agg=true"],
    ["poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%"],
    ["quota", "q", "--hard=cpu=1500m,memory=1Gi,pods=10"],
    ["priorityclass", "high", "--value=1000", "--description=important"],
    ["ingress", "web", "--rule=foo.example.com/bar*=svc:8080,tls=cert"],
]


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file that is not UTF-8: kubectl puts it in binaryData (protobuf bytes)."""
    path = tmp_path_factory.mktemp("blob") / "blob.bin"
    path.write_bytes(bytes(range(256)))
    return path


@pytest.mark.parametrize(
    "args", CREATE_COMMANDS, ids=lambda a: "-".join(x for x in a[:3] if not x.startswith("-"))
)
def test_kubectl_create_body_decodes_like_kubectl_json(
    args: list[str], kubectl: Any, recorder: _Recorder, blob: Path
) -> None:
    args = [a.replace("{blob}", str(blob)) for a in args]
    before = len(recorder.bodies)
    kubectl("create", "--dry-run=server", "-o", "name", *args)
    assert len(recorder.bodies) == before + 1
    _path, content_type, body = recorder.bodies[-1]
    assert content_type == "application/vnd.kubernetes.protobuf"
    assert recorder.user_agents[-1].startswith(f"kubectl/v1.{recorder.minor}.")
    assert is_k8s_protobuf(body)
    expected = _drop_nulls(json.loads(kubectl("create", "--dry-run=client", "-o", "json", *args)))
    decoded = decode_k8s_protobuf(body)
    assert decoded == expected
    # Go's field order is kept too (kind and apiVersion first, then metadata, ...).
    assert list(decoded) == list(expected)

    # What kubectl creates is valid once defaulted, as on a real cluster (the server sets the
    # namespace from the URL and the uid before defaulting).
    group, _, version = decoded["apiVersion"].rpartition("/")
    info = builtin_resources().by_kind(group, version, decoded["kind"])
    assert info is not None
    if info.namespaced:
        decoded["metadata"]["namespace"] = "default"
    decoded["metadata"]["uid"] = "0b5e7a5e-0000-4000-8000-000000000001"
    apply_defaults(info, decoded)
    assert validate_object(info, decoded, None) == []


def test_kubectl_autoscale_posts_a_protobuf_hpa(kubectl: Any, recorder: _Recorder) -> None:
    args = ["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=80"]
    kubectl(*args, "--dry-run=server", "-o", "name")
    path, content_type, body = recorder.bodies[-1]
    # kubectl 1.32 writes autoscaling/v1, 1.33 autoscaling/v2 (metrics list instead of a field).
    version = "v1" if recorder.minor == "32" else "v2"
    assert path.startswith(
        f"/apis/autoscaling/{version}/namespaces/default/horizontalpodautoscalers?"
    )
    assert content_type == "application/vnd.kubernetes.protobuf"
    expected = _drop_nulls(json.loads(kubectl(*args, "--dry-run=client", "-o", "json")))
    decoded = decode_k8s_protobuf(body)
    assert decoded == expected
    assert (decoded["spec"]["minReplicas"], decoded["spec"]["maxReplicas"]) == (2, 5)
    info = builtin_resources().by_kind("autoscaling", version, "HorizontalPodAutoscaler")
    assert info is not None
    decoded["metadata"]["namespace"] = "default"
    apply_defaults(info, decoded)
    assert validate_object(info, decoded, None) == []


def test_kubectl_create_token_request(kubectl: Any, recorder: _Recorder) -> None:
    out = kubectl(
        "create", "token", "robot", "--duration=1h", "--audience=api",
        "--bound-object-kind=Pod", "--bound-object-name=p1", "--bound-object-uid=u1",
    )  # fmt: skip
    assert out.strip() == "header.payload.signature"
    path, _content_type, body = recorder.bodies[-1]
    assert path == "/api/v1/namespaces/default/serviceaccounts/robot/token"
    # Go's JSON of this TokenRequest: `status.token` has no omitempty, a zero
    # expirationTimestamp is null (left out here), the pointers are set.
    assert decode_k8s_protobuf(body) == {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {
            "audiences": ["api"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "u1"},
        },
        "status": {"token": ""},
    }


def test_helm_release_secrets_decode(helm_recorder: _Recorder, tmp_path: Path) -> None:
    """Helm 3 writes its release record as a protobuf Secret (POST, then PUT when deployed)."""
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: empty\nversion: 0.1.0\n")
    kubeconfig = tmp_path / "kubeconfig"
    recorder = helm_recorder
    server = f"http://127.0.0.1:{recorder.server_address[1]}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [
                    {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}
                ],
                "current-context": "c",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM"))}
    env.update(
        HELM_CACHE_HOME=str(tmp_path / "hc"),
        HELM_CONFIG_HOME=str(tmp_path / "hcfg"),
        HELM_DATA_HOME=str(tmp_path / "hd"),
    )
    before = len(recorder.bodies)
    proc = subprocess.run(
        [find_helm(), "--kubeconfig", str(kubeconfig), "install", "rel", str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    writes = recorder.bodies[before:]
    assert [(p.split("?")[0], ct) for p, ct, _b in writes] == [
        ("/api/v1/namespaces/default/secrets", "application/vnd.kubernetes.protobuf"),
        (
            "/api/v1/namespaces/default/secrets/sh.helm.release.v1.rel.v1",
            "application/vnd.kubernetes.protobuf",
        ),
    ]
    for (_path, _ct, body), status in zip(writes, ("pending-install", "deployed"), strict=True):
        secret = decode_k8s_protobuf(body)
        assert secret["kind"] == "Secret" and secret["type"] == "helm.sh/release.v1"
        assert secret["metadata"]["name"] == "sh.helm.release.v1.rel.v1"
        labels = secret["metadata"]["labels"]
        assert (labels["name"], labels["owner"], labels["status"], labels["version"]) == (
            "rel",
            "helm",
            status,
            "1",
        )
        # data.release is base64 (Secret bytes) of Helm's own base64(gzip(release JSON)).
        release = json.loads(
            gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"])))
        )
        assert (release["name"], release["info"]["status"], release["version"]) == (
            "rel",
            status,
            1,
        )


# ------------------------------------------------------------------ an independent encoder


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vi(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def ld(num: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, "") + ld(4, "")


def object_meta(name: str, *extra: bytes) -> bytes:
    # Go marshals every non-pointer field, empty or not; the decoder must drop them again.
    return (
        ld(1, name)
        + ld(2, "")
        + ld(3, "")
        + ld(4, "")
        + ld(5, "")
        + ld(6, "")
        + vi(7, 0)
        + ld(8, b"")
        + b"".join(extra)
    )


def test_delete_options() -> None:
    raw = vi(1, 0) + ld(2, ld(1, "uid-1") + ld(2, "42")) + ld(4, "Foreground") + ld(5, "All")
    decoded = decode_k8s_protobuf(envelope("v1", "DeleteOptions", raw))
    assert decoded == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "uid-1", "resourceVersion": "42"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
    }
    # Group-versioned DeleteOptions (as typed clients of other groups send them) work too.
    assert decode_k8s_protobuf(envelope("apps/v1", "DeleteOptions", vi(3, 1)))["orphanDependents"]


def test_eviction_with_delete_options() -> None:
    # kubectl drain posts policy/v1 Evictions through the typed client.
    delete_options = vi(1, 30) + ld(2, ld(1, "uid-9"))
    raw = ld(1, object_meta("web-0", ld(3, "default"))) + ld(2, delete_options)
    assert decode_k8s_protobuf(envelope("policy/v1", "Eviction", raw)) == {
        "kind": "Eviction",
        "apiVersion": "policy/v1",
        "metadata": {"name": "web-0", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 30, "preconditions": {"uid": "uid-9"}},
    }


def test_pointer_zero_kept_and_plain_zero_dropped() -> None:
    spec = vi(1, 0) + vi(5, 0) + vi(7, 0)  # replicas (pointer) 0, minReadySeconds 0, paused false
    obj = decode_k8s_protobuf(
        envelope("apps/v1", "Deployment", ld(1, object_meta("d")) + ld(2, spec))
    )
    assert obj["spec"]["replicas"] == 0
    assert "minReadySeconds" not in obj["spec"] and "paused" not in obj["spec"]
    assert obj["metadata"] == {"name": "d"}
    # Non-pointer structs appear even when absent, as Go's JSON prints them (minus nulls).
    assert obj["spec"] == {
        "replicas": 0,
        "template": {"metadata": {}, "spec": {}},
        "strategy": {},
    }
    assert obj["status"] == {}
    # A negative int32 is sent as a ten-byte varint.
    obj = decode_k8s_protobuf(envelope("apps/v1", "Deployment", ld(2, vi(6, -1))))
    assert obj["spec"]["revisionHistoryLimit"] == -1


def test_special_types() -> None:
    managed = ld(1, "kubectl") + ld(2, "Update") + ld(3, "v1") + ld(4, vi(1, 1700000000))
    managed += ld(6, "FieldsV1") + ld(7, ld(1, b'{"f:data":{".":{}}}'))
    meta = object_meta(
        "p",
        ld(8, vi(1, 1700000000) + vi(2, 999)),
        ld(11, ld(1, "app") + ld(2, "web")),
        ld(17, managed),
    )
    container = (
        ld(1, "c")
        + ld(2, "busybox")
        + ld(
            8,
            ld(1, ld(1, "cpu") + ld(2, ld(1, "250m")))
            + ld(2, ld(1, "memory") + ld(2, ld(1, "0.5Gi"))),
        )
        + ld(6, ld(1, "http") + vi(3, 8080) + ld(4, "TCP"))
    )
    probe_handler = ld(2, ld(1, "/healthz") + ld(2, vi(1, 1) + ld(3, "http")))
    container += ld(10, ld(1, probe_handler) + vi(2, 0) + vi(3, 0))
    pod = ld(1, meta) + ld(
        2, ld(2, container) + ld(1, ld(1, "cfg") + ld(2, ld(19, ld(1, ld(1, "cm")))))
    )
    obj = decode_k8s_protobuf(envelope("v1", "Pod", pod))
    assert obj["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert obj["metadata"]["labels"] == {"app": "web"}
    entry = obj["metadata"]["managedFields"][0]
    assert entry["time"] == "2023-11-14T22:13:20Z"
    assert entry["fieldsV1"] == {"f:data": {".": {}}}
    c = obj["spec"]["containers"][0]
    assert c["resources"] == {
        "limits": {"cpu": "250m"},
        "requests": {"memory": "512Mi"},
    }  # canonical
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # ProbeHandler is an embedded Go struct: its fields are inlined into the probe.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Volume inlines VolumeSource; ConfigMapVolumeSource inlines LocalObjectReference.
    assert obj["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "cm"}}]


def test_secret_bytes_are_base64_and_microtime() -> None:
    secret = ld(1, object_meta("s")) + ld(2, ld(1, "bin") + ld(2, b"\x00\xffhi")) + ld(3, "Opaque")
    obj = decode_k8s_protobuf(envelope("v1", "Secret", secret))
    assert obj["data"] == {"bin": base64.b64encode(b"\x00\xffhi").decode()}
    assert obj["type"] == "Opaque"
    event = ld(1, object_meta("e")) + ld(2, vi(1, 1700000000) + vi(2, 123456789))
    ev = decode_k8s_protobuf(envelope("events.k8s.io/v1", "Event", event))
    assert ev["eventTime"] == "2023-11-14T22:13:20.123456Z"


def test_packed_repeated_scalars_and_large_secret() -> None:
    # Go writes proto2 repeated ints unpacked, other encoders may pack them: accept both.
    packed = ld(4, _varint(1000) + _varint(2000))
    unpacked = vi(4, 3000) + vi(2, 0)  # and runAsUser 0: a pointer, so root stays visible
    spec = ld(14, packed + unpacked)
    obj = decode_k8s_protobuf(envelope("v1", "Pod", ld(2, spec)))
    assert obj["spec"]["securityContext"] == {
        "runAsUser": 0,
        "supplementalGroups": [1000, 2000, 3000],
    }
    big = b"x" * (1 << 20)
    secret = ld(1, object_meta("sh.helm.release.v1.r.v1")) + ld(2, ld(1, "release") + ld(2, big))
    decoded = decode_k8s_protobuf(envelope("v1", "Secret", secret + ld(3, "helm.sh/release.v1")))
    assert base64.b64decode(decoded["data"]["release"]) == big
    assert decoded["type"] == "helm.sh/release.v1"


def test_raw_extension_embeds_json() -> None:
    rev = ld(1, object_meta("r")) + ld(2, ld(1, b'{"spec":{"x":1}}')) + vi(3, 2)
    obj = decode_k8s_protobuf(envelope("apps/v1", "ControllerRevision", rev))
    assert obj["data"] == {"spec": {"x": 1}}
    assert obj["revision"] == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{}", "magic"),
        (b"k8s\x00" + ld(1, ld(1, "v1") + ld(2, "Nope")) + ld(2, b""), "no protobuf definition"),
        (b"k8s\x00" + ld(2, b""), "no apiVersion/kind"),
        (envelope("v1", "ConfigMap", b"\x0a\x05ab"), "truncated"),
        (envelope("v1", "ConfigMap", b"\x0a\x02\xff\xfe"), "truncated"),
        (envelope("v1", "ConfigMap", vi(1, 5)), "wire type"),
        (envelope("v1", "ConfigMap", b"\x80"), "truncated varint"),
        (
            envelope("v1", "ResourceQuota", ld(2, ld(1, ld(1, "cpu") + ld(2, ld(1, "lots"))))),
            "quantity 'lots'",
        ),
        (b"k8s\x00" + ld(1, ld(1, "v1") + ld(2, "ConfigMap")) + ld(3, "gzip"), "content encoding"),
    ],
)
def test_bad_bodies_raise_protobuf_error(body: bytes, needle: str) -> None:
    with pytest.raises(ProtobufError) as err:
        decode_k8s_protobuf(body)
    assert needle in str(err.value)


def test_schema_data_is_packaged() -> None:
    data = Path(__file__).resolve().parents[2] / "k3py/api/data/proto_schema.json.gz"
    assert data.is_file()


def test_mutated_bodies_never_escape_as_other_errors() -> None:
    """Whatever a client sends, the decoder answers with a result or a ProtobufError (a 400)."""
    import random

    pod_spec = ld(2, ld(1, "c") + ld(2, "img") + ld(6, ld(1, "http") + vi(3, 80)))
    template = ld(1, object_meta("t")) + ld(2, pod_spec)
    seeds = [
        envelope(
            "apps/v1", "Deployment", ld(1, object_meta("d")) + ld(2, vi(1, 0) + ld(3, template))
        ),
        envelope("v1", "Secret", ld(1, object_meta("s")) + ld(2, ld(1, "k") + ld(2, b"v"))),
    ]
    rnd = random.Random(7)
    for _ in range(3000):
        body = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(4, len(body))
            roll = rnd.random()
            if roll < 0.4:
                body[at] = rnd.randrange(256)
            elif roll < 0.7:
                body.insert(at, rnd.randrange(256))
            else:
                del body[at]
        try:
            decode_k8s_protobuf(bytes(body))
        except ProtobufError:
            pass


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (3600 * 10**9, "1h0m0s"),
        (90 * 10**9, "1m30s"),
        (1_500_000_000, "1.5s"),
        (500_000_000, "500ms"),
        (1_500_000, "1.5ms"),
        (1_500, "1.5µs"),
        (7, "7ns"),
        (-2 * 10**9, "-2s"),
        (3723_000_000_001, "1h2m3.000000001s"),
    ],
)
def test_metav1_duration_text_is_gos(ns: int, text: str) -> None:
    assert _go_duration(ns) == text


def test_structure_check_reports_unknown_fields_like_strict_decoding() -> None:
    from k3py.api.proto.structure import check_structure, prune_unknown_fields

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "w", "labels": {"a": "b"}, "creationTimestamp": None, "colour": "red"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "imagePullPolice": "Always",
                            "livenessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 5},
                        }
                    ],
                    # VolumeSource is inlined in Volume; PVC templates carry TypeMeta.
                    "volumes": [{"name": "v", "configMap": {"name": "c", "defaultMode": 420}}],
                },
            },
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        },
        "status": {},
    }
    report = check_structure("apps/v1", "Deployment", dep)
    assert report.known and report.type_causes == []
    assert report.unknown_fields == [
        "metadata.colour",
        "spec.template.spec.containers[0].imagePullPolice",
    ]
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "spec": {
            "volumeClaimTemplates": [
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "spec": {}}
            ]
        },
    }
    assert check_structure("apps/v1", "StatefulSet", sts).unknown_fields == []
    ints = check_structure("v1", "Pod", {"spec": {"priority": 2**31, "hostNetwork": "yes"}})
    assert [c["field"] for c in ints.type_causes] == ["spec.priority", "spec.hostNetwork"]
    assert not check_structure("example.com/v1", "Widget", {"anything": 1}).known
    pruned = prune_unknown_fields("apps/v1", "Deployment", dep)
    assert pruned == ["metadata.colour", "spec.template.spec.containers[0].imagePullPolice"]
    assert "colour" not in dep["metadata"]
    assert "imagePullPolice" not in dep["spec"]["template"]["spec"]["containers"][0]
    assert check_structure("apps/v1", "Deployment", dep).unknown_fields == []
    lease = {"spec": {"renewTime": "2026-11-27T21:00:00.123456Z", "acquireTime": "2026-11-27"}}
    times = check_structure("coordination.k8s.io/v1", "Lease", lease).type_causes
    assert times == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.acquireTime",
            "message": 'Invalid value: "2026-11-27": spec.acquireTime in body must be of type date-time',
        }
    ]


def test_schema_generator_reads_proto_and_go_tags(tmp_path: Path) -> None:
    """scripts/gen-proto-schema.py on a miniature API: the facts it must carry into the data."""
    import subprocess as sp
    import sys

    root = Path(__file__).resolve().parents[2]
    proto_dir = tmp_path / "proto" / "k8s.io" / "api" / "demo" / "v1"
    go_dir = tmp_path / "go" / "demo" / "v1"
    proto_dir.mkdir(parents=True)
    go_dir.mkdir(parents=True)
    (proto_dir / "generated.proto").write_text(
        """
syntax = "proto2";
package k8s.io.api.demo.v1;
// Widget is a demo.
message Widget {
  optional WidgetSpec spec = 2;
  // comments are skipped
  repeated string tags = 3;
  map<string, bytes> blobs = 4;
  optional Inner inner = 5;
}
message WidgetSpec {
  optional int32 replicas = 1;
  optional bool paused = 2;
  optional string name = 3;
}
message Inner {
  optional string colour = 1;
}
message Names {
  repeated string items = 1;
}
"""
    )
    (go_dir / "types.go").write_text(
        """package v1
type Widget struct {
\tmetav1.TypeMeta `json:",inline"`
\tSpec WidgetSpec `json:"spec" protobuf:"bytes,2,opt,name=spec"`
\tTags []string `json:"tags,omitempty" protobuf:"bytes,3,rep,name=tags"`
\tBlobs map[string][]byte `json:"blobs,omitempty" protobuf:"bytes,4,rep,name=blobs"`
\tInner `json:"" protobuf:"bytes,5,opt,name=inner"`
}
type WidgetSpec struct {
\tReplicas *int32 `json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas"`
\tPaused bool `json:"paused,omitempty" protobuf:"varint,2,opt,name=paused"`
\tName string `json:"name" protobuf:"bytes,3,opt,name=name"`
}
type Inner struct {
\tColour string `json:"colour,omitempty" protobuf:"bytes,1,opt,name=colour"`
}
type Names []string
"""
    )
    out = tmp_path / "schema.json.gz"
    script = root / "scripts" / "gen-proto-schema.py"
    proc = sp.run(
        [
            sys.executable,
            str(script),
            "--proto-root",
            str(tmp_path / "proto"),
            "--go-api",
            str(tmp_path / "go"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(gzip.decompress(out.read_bytes()))
    messages = doc["messages"]
    assert messages["k8s.io.api.demo.v1.Widget"] == [
        [2, "spec", "k8s.io.api.demo.v1.WidgetSpec", ""],
        [3, "tags", "string", "ro"],
        [4, "blobs", "map:string:bytes", "mo"],
        [5, "", "k8s.io.api.demo.v1.Inner", "i"],
    ]
    assert messages["k8s.io.api.demo.v1.WidgetSpec"] == [
        [1, "replicas", "int32", "po"],
        [2, "paused", "bool", "o"],
        [3, "name", "string", ""],
    ]
    assert doc["lists"] == ["k8s.io.api.demo.v1.Names"]
    assert doc["typemeta"] == ["k8s.io.api.demo.v1.Widget"]
