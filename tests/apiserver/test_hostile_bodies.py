"""Hostile request bodies and parameters: each gets a clear 4xx — or an answer — quickly, while
the API keeps answering, and nothing is logged as a traceback.

Attacks, as they were found against k3py (API, controllers and kubelet share one event loop):
a 2 KB JSON patch of chained ``copy`` operations, each doubling a list, froze the process for
20 s; a 3 MiB YAML ConfigMap for 14 s; a 300 KB protobuf PodList of empty items for 7 s; YAML
nested 900 deep answered 500 with thousands of logged traceback lines; a watch with
``timeoutSeconds=10^400`` wrote a 500 response into its already started 200 stream. How
responsiveness is measured is explained in ``tests/apiserver/hostile.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.apiserver.hostile import raw_tls_exchange, responsive, server_tracebacks
from tests.cluster import TestCluster

HUGE = "1" + "0" * 400  # 10^400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("hostile-bodies")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_tracebacks(cluster: TestCluster) -> Iterator[None]:
    """Client errors never log a traceback."""
    before = server_tracebacks(cluster)
    yield
    assert server_tracebacks(cluster) == before, cluster.server_log(40)


def _status(body: bytes) -> dict:
    status = json.loads(body)
    assert status["kind"] == "Status", status
    return status


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_json_patch_copy_bomb_is_stopped_by_the_copy_limit(cluster: TestCluster) -> None:
    """22 copies, each appending a list to itself, would build a list of 4 million strings
    (main froze 20 s on it; the issue's 40-copy version ran out of memory). Upstream's limit on
    the bytes all copies of one patch may add (3 MiB) stops it with a 422."""
    cluster.kubectl("create", "configmap", "bomb", "--from-literal=a=b")
    ops: list[dict] = [{"op": "add", "path": "/metadata/annotations", "value": {"a": ["xxxxxxxxxx"]}}]
    ops += [{"op": "copy", "from": "/metadata/annotations/a", "path": "/metadata/annotations/a/-"}] * 22
    body = json.dumps(ops)
    assert len(body) < 2048
    with responsive(cluster):
        status, answer, _ = cluster.request(
            "PATCH", "/api/v1/namespaces/default/configmaps/bomb", body,
            {"Content-Type": "application/json-patch+json"}, timeout=60,
        )  # fmt: skip
    assert status == 422, answer[:300]
    message = _status(answer)["message"]
    assert "accumulated size increase of copy" in message and "exceeding the limit 3145728" in message
    # The object is untouched, and kubectl's own patches still work.
    assert "annotations" not in cluster.kubectl_json("get", "configmap", "bomb")["metadata"]
    cluster.kubectl("patch", "configmap", "bomb", "--type=json", "-p", '[{"op":"copy","from":"/data/a","path":"/data/c"}]')
    assert cluster.kubectl_json("get", "configmap", "bomb")["data"] == {"a": "b", "c": "b"}


def test_json_patch_over_10000_operations_is_413(cluster: TestCluster) -> None:
    cluster.kubectl("create", "configmap", "many-ops")
    ops = [{"op": "test", "path": "/metadata/name", "value": "many-ops"}] * 10001
    status, answer, _ = cluster.request(
        "PATCH", "/api/v1/namespaces/default/configmaps/many-ops", json.dumps(ops),
        {"Content-Type": "application/json-patch+json"},
    )  # fmt: skip
    assert status == 413, answer[:300]
    status_body = _status(answer)
    assert status_body["reason"] == "RequestEntityTooLarge"
    assert status_body["message"] == "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"


def test_3_mib_yaml_body_gets_its_answer_without_stopping_the_api(cluster: TestCluster) -> None:
    """A 3 MiB ConfigMap in YAML, 43,000 keys: PyYAML's pure-Python loader took 14 s on the
    event loop. Now it is parsed from libyaml's events on a worker thread and the registry
    walks it there too; the answer is validation's 422 (a ConfigMap holds at most 1 MiB)."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: big-yaml", "data:"]
    size, i = 0, 0
    while size < 3 * 1024 * 1024 - 100:
        line = f"  k{i:07d}: {'v' * 60}"
        lines.append(line)
        size += len(line) + 1
        i += 1
    body = "\n".join(lines) + "\n"
    with responsive(cluster):
        status, answer, _ = cluster.request(
            "POST", "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create&fieldValidation=Strict",
            body, {"Content-Type": "application/yaml"}, timeout=120,
        )  # fmt: skip
    assert status == 422, answer[:300]
    assert "may not be more than 1048576 bytes" in _status(answer)["message"]


def test_large_valid_yaml_is_created_and_read_back_as_yaml(cluster: TestCluster) -> None:
    """Not a regression: a 900 KB ConfigMap in YAML (anchors and a merge key included) is
    created, and served back as YAML (written on a worker thread)."""
    data = "\n".join(f"  k{i:06d}: {'v' * 60}" for i in range(13000))
    body = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-valid\n"
        "  labels: &labels {app: big, tier: x}\n  annotations:\n    <<: *labels\n    note: merged\n"
        f"data:\n{data}\n"
    )
    with responsive(cluster):
        status, answer, _ = cluster.request(
            "POST", "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create",
            body, {"Content-Type": "application/yaml"}, timeout=120,
        )  # fmt: skip
    assert status == 201, answer[:300]
    created = json.loads(answer)
    assert created["metadata"]["annotations"] == {"app": "big", "tier": "x", "note": "merged"}
    assert len(created["data"]) == 13000
    status, answer, headers = cluster.request(
        "GET", "/api/v1/namespaces/default/configmaps/big-valid", headers={"Accept": "application/yaml"}
    )
    assert status == 200 and headers["content-type"].startswith("application/yaml")
    assert b"k012999: " + b"v" * 60 in answer


def test_300_kb_protobuf_list_is_refused_quickly(cluster: TestCluster) -> None:
    """A protobuf PodList of 150,000 empty items, posted where a Pod is expected: two bytes per
    item on the wire, a whole rendered Pod each once decoded (main: 7 s on the loop). The
    decoder's budget of messages per body byte refuses it with a 400."""
    type_meta = _field(1, b"v1") + _field(2, b"PodList")
    items = _field(2, b"") * 150_000
    body = b"k8s\x00" + _field(1, type_meta) + _field(2, items)
    assert 290_000 < len(body) < 310_000
    with responsive(cluster):
        status, answer, _ = cluster.request(
            "POST", "/api/v1/namespaces/default/pods", body,
            {"Content-Type": "application/vnd.kubernetes.protobuf"}, timeout=60,
        )  # fmt: skip
    assert status == 400, answer[:300]
    assert "protobuf" in _status(answer)["message"]
    # A real protobuf body still works: kubectl create sends one.
    cluster.kubectl("create", "configmap", "from-protobuf", "--from-literal=k=v")
    assert cluster.kubectl_json("get", "configmap", "from-protobuf")["data"] == {"k": "v"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nx: " + "[" * 900 + "]" * 900 + "\n"),
        ("application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nx:\n" + "".join("  " * i + "- \n" for i in range(900))),
        ("application/json", '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":' + "[" * 900 + "]" * 900 + "}"),
    ],
    ids=["yaml-flow", "yaml-block", "json"],
)
def test_body_nested_900_deep_is_400(cluster: TestCluster, content_type: str, body: str) -> None:
    status, answer, _ = cluster.request(
        "POST", "/api/v1/namespaces/default/configmaps", body, {"Content-Type": content_type}
    )
    assert status == 400, answer[:300]
    assert "nested more than 100 levels deep" in _status(answer)["message"]
    assert cluster.kubectl("get", "configmap", "deep", check=False).returncode != 0


def test_patch_that_nests_past_the_limit_one_add_at_a_time_is_422(cluster: TestCluster) -> None:
    """Each operation is shallow, the result is not: the patched object is checked too."""
    cluster.kubectl("create", "configmap", "deepening")
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {}}]
    path = "/metadata/annotations"
    for _ in range(150):
        path += "/a"
        ops.append({"op": "add", "path": path, "value": {}})
    status, answer, _ = cluster.request(
        "PATCH", "/api/v1/namespaces/default/configmaps/deepening", json.dumps(ops),
        {"Content-Type": "application/json-patch+json"},
    )  # fmt: skip
    assert status == 422, answer[:300]
    assert "nested more than 100 levels deep" in _status(answer)["message"]


def _one_response(raw: bytes) -> tuple[int, dict]:
    """The only HTTP response in ``raw`` (a second status line is the bug): status, Status."""
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:2000]
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), _status(body)


def test_watch_with_timeout_seconds_10_to_the_400_is_400_before_the_stream(cluster: TestCluster) -> None:
    raw = raw_tls_exchange(
        cluster,
        f"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds={HUGE} HTTP/1.1\r\nHost: k\r\n\r\n".encode(),
    )
    code, status = _one_response(raw)
    assert code == 400 and status["reason"] == "BadRequest"
    assert "timeoutSeconds" in status["message"] and "out of range" in status["message"]


def test_watch_as_table_with_bad_include_object_is_400_before_the_stream(cluster: TestCluster) -> None:
    """includeObject is only looked at when the first event is written: it used to be
    checked there, after the 200, and its 400 became a second status line in the stream."""
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    raw = raw_tls_exchange(
        cluster,
        f"GET /api/v1/namespaces/default/configmaps?watch=1&includeObject=Everything HTTP/1.1\r\n"
        f"Host: k\r\nAccept: {accept}\r\n\r\n".encode(),
    )
    code, status = _one_response(raw)
    assert code == 400 and "includeObject" in status["message"]


@pytest.mark.parametrize(
    "query",
    [f"limit={HUGE}", f"resourceVersion={HUGE}", "limit=9223372036854775808", f"watch=1&resourceVersion={HUGE}"],
)
def test_out_of_range_list_parameters_are_400(cluster: TestCluster, query: str) -> None:
    status, answer, _ = cluster.request("GET", f"/api/v1/namespaces/default/configmaps?{query}")
    assert status == 400, answer[:300]
    assert "out of range" in _status(answer)["message"]


def test_delete_with_out_of_range_grace_period_is_400_and_deletes_nothing(cluster: TestCluster) -> None:
    cluster.kubectl("create", "configmap", "keep-me")
    status, answer, _ = cluster.request(
        "DELETE", f"/api/v1/namespaces/default/configmaps/keep-me?gracePeriodSeconds={HUGE}"
    )
    assert status == 400, answer[:300]
    status, answer, _ = cluster.request(
        "DELETE", "/api/v1/namespaces/default/configmaps/keep-me",
        f"apiVersion: v1\nkind: DeleteOptions\ngracePeriodSeconds: {HUGE}\n", {"Content-Type": "application/yaml"},
    )  # fmt: skip
    assert status == 400, answer[:300]
    status, answer, _ = cluster.request(
        "DELETE", "/api/v1/namespaces/default/configmaps/keep-me",
        json.dumps({"gracePeriodSeconds": 2**63}), {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400, answer[:300]  # uint64 fits JSON, but the field is an int64
    assert cluster.kubectl_json("get", "configmap", "keep-me")["metadata"]["name"] == "keep-me"


@pytest.mark.parametrize(
    "replicas", [HUGE, "9" * 5000, ".inf"], ids=["10^400", "5000-digits", "infinity"]
)
def test_deployment_with_out_of_range_replicas_in_yaml_is_400_and_not_created(cluster: TestCluster, replicas: str) -> None:
    body = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: huge}\n"
        f"spec: {{replicas: {replicas}, selector: {{matchLabels: {{a: b}}}},\n"
        "  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}\n"
    )
    status, answer, _ = cluster.request(
        "POST", "/apis/apps/v1/namespaces/default/deployments", body, {"Content-Type": "application/yaml"}
    )
    assert status == 400, answer[:300]
    assert cluster.kubectl("get", "deployment", "huge", check=False).returncode != 0
