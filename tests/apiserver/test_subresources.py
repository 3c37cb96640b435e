"""Pod binding and eviction, streaming placeholders, namespace termination, Table variants, events."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster import TestCluster


def _create(cluster: TestCluster, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    status, body = cluster.request_json("POST", path, obj)
    assert status == 201, body
    return body


def _pod(name: str) -> dict[str, Any]:
    # A scheduler name no scheduler serves: the test binds the pod itself.
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"schedulerName": "test-binds-by-hand", "containers": [{"name": "c", "image": "busybox"}]},
    }  # fmt: skip


def test_binding_assigns_a_node_once(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "bind")
    _create(cluster, "/api/v1/namespaces/bind/pods", _pod("p"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}}
    status, body = cluster.request_json("POST", "/api/v1/namespaces/bind/pods/p/binding", binding)
    assert status == 201 and body["status"] == "Success"
    _, pod = cluster.request_json("GET", "/api/v1/namespaces/bind/pods/p")
    assert pod["spec"]["nodeName"] == "node-a"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"])
    status, body = cluster.request_json("POST", "/api/v1/namespaces/bind/pods/p/binding", binding)
    assert status == 409 and 'is already assigned to node "node-a"' in body["message"]


def test_eviction_deletes_and_streaming_answers_clearly(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "evict")
    _create(cluster, "/api/v1/namespaces/evict/pods", _pod("e"))
    logs = cluster.kubectl("logs", "e", "-n", "evict", check=False)
    assert logs.returncode == 1 and "pod e does not have a host assigned" in logs.stderr
    status, body, _ = cluster.request("GET", "/api/v1/namespaces/evict/pods/e/exec?command=true&stdout=true")
    assert status == 400 and b"pod e does not have a host assigned" in body
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "e", "namespace": "evict"}}
    status, body = cluster.request_json("POST", "/api/v1/namespaces/evict/pods/e/eviction", eviction)
    assert status == 201, body
    status, _ = cluster.request_json("GET", "/api/v1/namespaces/evict/pods/e")
    assert status == 404


def test_namespace_deletion_empties_it_and_blocks_new_content(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "doomed")
    cluster.kubectl("create", "configmap", "c", "-n", "doomed")
    finalizer = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    _create(cluster, "/api/v1/namespaces/doomed/configmaps", finalizer)
    cluster.kubectl("delete", "namespace", "doomed", "--wait=false")
    ns = cluster.kubectl_json("get", "namespace", "doomed")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    status, body = cluster.request_json("POST", "/api/v1/namespaces/doomed/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}})
    assert status == 403
    assert body["message"] == "configmaps is forbidden: unable to create new content in namespace doomed because it is being terminated"
    status, held = cluster.request_json("GET", "/api/v1/namespaces/doomed/configmaps/held")
    held["metadata"]["finalizers"] = []
    cluster.request_json("PUT", "/api/v1/namespaces/doomed/configmaps/held", held)
    cluster.wait_for(lambda: cluster.request_json("GET", "/api/v1/namespaces/doomed")[0] == 404, timeout=30, what="namespace gone")


def test_table_include_object_variants(cluster: TestCluster) -> None:
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    for include, expect in (("Metadata", "PartialObjectMetadata"), ("Object", "Namespace"), ("None", None)):
        status, body, _ = cluster.request("GET", f"/api/v1/namespaces?includeObject={include}", headers=accept)
        table = json.loads(body)
        assert status == 200 and table["kind"] == "Table"
        assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Age"]
        row = table["rows"][0]
        assert (row.get("object") or {}).get("kind") == expect
    status, body, _ = cluster.request(
        "GET", "/api/v1/namespaces", headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"}
    )
    assert status == 200 and json.loads(body)["kind"] == "PartialObjectMetadataList"


def test_events_in_both_apis(cluster: TestCluster) -> None:
    event = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"},
        "reason": "Testing", "message": "hello", "type": "Normal",
    }  # fmt: skip
    _create(cluster, "/api/v1/namespaces/default/events", event)
    status, same = cluster.request_json("GET", "/apis/events.k8s.io/v1/namespaces/default/events/ev1")
    assert status == 200 and same["apiVersion"] == "events.k8s.io/v1"
    described = cluster.kubectl("get", "events", "-n", "default", "--field-selector", "reason=Testing").stdout
    assert "hello" in described
