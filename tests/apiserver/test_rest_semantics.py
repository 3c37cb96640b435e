"""Object semantics over raw HTTPS: what any client sees, checked request by request."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster import TestCluster

CM = "/api/v1/namespaces/{ns}/configmaps"


def _ns(cluster: TestCluster, name: str) -> str:
    status, _ = cluster.request_json("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert status == 201
    return name


def _cm(name: str, **data: str) -> dict[str, Any]:
    # The label tells the test's objects from those controllers add (kube-root-ca.crt).
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"test": "yes"}}, "data": data}


def test_create_sets_server_metadata_and_conflict_on_stale_update(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-meta")
    status, created = cluster.request_json("POST", CM.format(ns=ns), _cm("a", k="v"))
    assert status == 201
    meta = created["metadata"]
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    path = f"{CM.format(ns=ns)}/a"
    created["data"] = {"k": "v2"}
    status, updated = cluster.request_json("PUT", path, created)
    assert status == 200 and int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, stale = cluster.request_json("PUT", path, created)  # still the old resourceVersion
    assert status == 409 and stale["reason"] == "Conflict"
    assert stale["message"] == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_generate_name_dry_run_and_name_mismatch(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-gen")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}}
    status, created = cluster.request_json("POST", CM.format(ns=ns), body)
    assert status == 201 and created["metadata"]["name"].startswith("job-")
    assert len(created["metadata"]["name"]) == len("job-") + 5
    status, dry = cluster.request_json("POST", CM.format(ns=ns) + "?dryRun=All", _cm("dry"))
    assert status == 201 and dry["metadata"]["name"] == "dry"
    status, _ = cluster.request_json("GET", CM.format(ns=ns) + "/dry")
    assert status == 404
    status, err = cluster.request_json("PUT", CM.format(ns=ns) + "/other", _cm("dry"))
    assert status == 400 and "does not match the name on the URL" in err["message"]


def test_kind_mismatch_invalid_and_oversized_bodies(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-bad")
    status, err = cluster.request_json("POST", CM.format(ns=ns), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    assert status == 400 and err["kind"] == "Status"
    status, err = cluster.request_json("POST", CM.format(ns=ns), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert status == 422 and err["details"]["causes"][0]["field"] == "metadata.name"
    big = json.dumps(_cm("big", blob="x" * (3 * 1024 * 1024 + 10)))
    status, body, _ = cluster.request("POST", CM.format(ns=ns), big, {"Content-Type": "application/json"})
    assert status == 413 and json.loads(body)["reason"] == "RequestEntityTooLarge"
    status, body, _ = cluster.request("POST", CM.format(ns=ns), "a: [", {"Content-Type": "application/yaml"})
    assert status == 400 and json.loads(body)["kind"] == "Status"


def test_secret_string_data_is_folded_into_data(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-secret")
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"user": "admin"}}
    status, created = cluster.request_json("POST", f"/api/v1/namespaces/{ns}/secrets", body)
    assert status == 201
    assert created["data"] == {"user": "YWRtaW4="} and "stringData" not in created


def test_finalizers_hold_deletion_until_removed(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-final")
    body = _cm("f")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    cluster.request_json("POST", CM.format(ns=ns), body)
    path = CM.format(ns=ns) + "/f"
    status, deleting = cluster.request_json("DELETE", path)
    assert status in (200, 202) and deleting["metadata"]["deletionTimestamp"]
    status, still = cluster.request_json("GET", path)
    assert status == 200 and still["metadata"]["finalizers"] == ["example.com/hold"]
    still["metadata"]["finalizers"] = []
    status, _ = cluster.request_json("PUT", path, still)
    assert status == 200
    status, _ = cluster.request_json("GET", path)
    assert status == 404


def test_namespace_finalizer_is_added_on_create_only(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-nsfin")
    status, created = cluster.request_json("GET", f"/api/v1/namespaces/{ns}")
    assert created["spec"] == {"finalizers": ["kubernetes"]}
    created["spec"]["finalizers"] = []
    status, finalized = cluster.request_json("PUT", f"/api/v1/namespaces/{ns}/finalize", created)
    assert status == 200 and finalized["spec"].get("finalizers", []) == []
    # A later write of the namespace itself keeps the (empty) finalizers as stored.
    finalized["metadata"]["labels"]["team"] = "a"
    status, updated = cluster.request_json("PUT", f"/api/v1/namespaces/{ns}", finalized)
    assert status == 200 and updated["metadata"]["labels"]["team"] == "a"
    assert updated["spec"].get("finalizers", []) == []
    # With no finalizer left, deleting the namespace removes it at once.
    status, _ = cluster.request_json("DELETE", f"/api/v1/namespaces/{ns}")
    assert status in (200, 202)
    cluster.wait_for(lambda: cluster.request_json("GET", f"/api/v1/namespaces/{ns}")[0] == 404, what="namespace gone")


def test_delete_preconditions_and_status_subresource(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-pre")
    _, created = cluster.request_json("POST", CM.format(ns=ns), _cm("p"))
    status, err = cluster.request_json("DELETE", CM.format(ns=ns) + "/p", {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-the-uid"}})
    assert status == 409 and "Precondition failed: UID in precondition" in err["message"]
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 7},
    }  # fmt: skip
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    status, created = cluster.request_json("POST", path, dep)
    assert status == 201 and "replicas" not in (created.get("status") or {})

    def write_status() -> dict[str, Any] | None:
        # The deployment controller writes status too: re-read and retry on 409, as clients do.
        _, current = cluster.request_json("GET", path + "/d")
        current["status"] = {"replicas": 3, "observedGeneration": 1}
        current["spec"]["replicas"] = 9
        status, after = cluster.request_json("PUT", path + "/d/status", current)
        return after if status == 200 else None

    after = cluster.wait_for(write_status, what="a status write without conflict")
    assert after["status"]["replicas"] == 3 and after["spec"].get("replicas") != 9
    assert after["metadata"]["generation"] == 1


def test_services_get_unique_cluster_ips_and_node_ports(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-svc")
    ips, ports = set(), set()
    for i in range(5):
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"}, "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80}]}}
        status, created = cluster.request_json("POST", f"/api/v1/namespaces/{ns}/services", svc)
        assert status == 201, created
        ips.add(created["spec"]["clusterIP"])
        ports.add(created["spec"]["ports"][0]["nodePort"])
    assert len(ips) == 5 and all(ip.startswith("10.43.") and ip != "10.43.0.1" for ip in ips)
    assert len(ports) == 5 and all(30000 <= p <= 32767 for p in ports)
    clash = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clash"}, "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 80}]}}
    status, err = cluster.request_json("POST", f"/api/v1/namespaces/{ns}/services", clash)
    assert status == 422 and "provided IP is already allocated" in err["message"]


def _watch_lines(cluster: TestCluster, path: str, until: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Read watch events from a raw HTTPS stream until `until` events arrived."""
    import http.client

    context = cluster.ssl_context()

    def run() -> list[dict[str, Any]]:
        conn = http.client.HTTPSConnection("127.0.0.1", cluster.port, context=context, timeout=timeout)
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        events = []
        while len(events) < until:
            line = response.readline()
            if not line:
                break
            events.append(json.loads(line))
        conn.close()
        return events

    return cluster.in_netns(run)


def test_watch_resumes_exactly_after_a_resource_version(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-watch")
    _, first = cluster.request_json("POST", CM.format(ns=ns), _cm("w1"))
    cluster.request_json("POST", CM.format(ns=ns), _cm("w2"))
    cluster.request_json("DELETE", CM.format(ns=ns) + "/w1")
    rv = first["metadata"]["resourceVersion"]
    events = _watch_lines(cluster, CM.format(ns=ns) + f"?watch=true&resourceVersion={rv}&labelSelector=test%3Dyes", 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w2"), ("DELETED", "w1")]
    listed = _watch_lines(cluster, CM.format(ns=ns) + "?watch=true&resourceVersion=0&labelSelector=test%3Dyes", 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in listed] == [("ADDED", "w2")]


def test_list_limit_and_continue(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-page")
    for i in range(5):
        cluster.request_json("POST", CM.format(ns=ns), _cm(f"c{i}"))
    names: list[str] = []
    path = CM.format(ns=ns) + "?limit=2&labelSelector=test%3Dyes"
    while True:
        status, page = cluster.request_json("GET", path)
        assert status == 200
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
        path = CM.format(ns=ns) + f"?limit=2&labelSelector=test%3Dyes&continue={token}"
    assert names == [f"c{i}" for i in range(5)]


def test_crd_serves_its_resource_with_crud_and_status(cluster: TestCluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }  # fmt: skip
    status, _ = cluster.request_json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    established = cluster.wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (cluster.request_json("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")[1].get("status") or {}).get("conditions", [])
        ),
        what="CRD Established",
    )
    assert established
    out = cluster.kubectl("api-resources", "--api-group=example.com", "--no-headers").stdout
    assert out.split() == ["widgets", "wd", "example.com/v1", "true", "Widget"]
    _ns(cluster, "sem-crd")
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}, "status": {"ok": True}}
    path = "/apis/example.com/v1/namespaces/sem-crd/widgets"
    status, created = cluster.request_json("POST", path, body)
    assert status == 201 and created["spec"] == {"size": 3} and "status" not in created
    got = cluster.kubectl_json("get", "widget", "w", "-n", "sem-crd")
    assert got["spec"]["size"] == 3
    table = cluster.kubectl("get", "wd", "-n", "sem-crd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE"] and table[1].split() == ["w", "3"]
    created["status"] = {"ok": True}
    status, after = cluster.request_json("PUT", path + "/w/status", created)
    assert status == 200 and after["status"] == {"ok": True}


def test_never_a_traceback_for_garbage(cluster: TestCluster) -> None:
    for method, path, body, ctype in (
        ("POST", "/api/v1/namespaces/default/configmaps", b"\x00\xff\xfe", "application/json"),
        ("POST", "/api/v1/namespaces/default/configmaps", b"k8s\x00garbage", "application/vnd.kubernetes.protobuf"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/x", b"{}", "text/plain"),
        ("GET", "/api/v1/namespaces/default/configmaps?limit=abc", None, "application/json"),
        ("GET", "/api/v1/namespaces/default/configmaps?labelSelector=%3D%3D%3D", None, "application/json"),
        ("GET", "/apis/nope/v1/things", None, "application/json"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/x", b"[1,2", "application/json"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/x", b'{"preconditions":1,"gracePeriodSeconds":"x"}', "application/json"),
        ("POST", "/api/v1/namespaces/default/configmaps", b'{"metadata":{"name":1}}', "application/json"),
        ("POST", "/api/v1/namespaces/default/configmaps", b'{"metadata":{"name":"y","labels":[1]}}', "application/json"),
        ("PATCH", "/api/v1/namespaces/default/services/kubernetes", b'{"metadata":true}', "application/apply-patch+yaml"),
        ("PATCH", "/api/v1/namespaces/default/services/kubernetes", b'{"spec":{"ports":7}}', "application/strategic-merge-patch+json"),
    ):
        status, data, _ = cluster.request(method, path, body, {"Content-Type": ctype})
        assert 400 <= status < 500, (method, path, status, data)
        assert json.loads(data)["kind"] == "Status"


def test_deletecollection_by_label(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-dc")
    for name, keep in (("a", "no"), ("b", "no"), ("c", "yes")):
        body = _cm(name)
        body["metadata"]["labels"]["keep"] = keep
        cluster.request_json("POST", CM.format(ns=ns), body)
    status, deleted = cluster.request_json("DELETE", CM.format(ns=ns) + "?labelSelector=keep%3Dno")
    assert status == 200 and sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    _, left = cluster.request_json("GET", CM.format(ns=ns) + "?labelSelector=test%3Dyes")
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]


def test_watch_list_initial_events_end_with_a_bookmark(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-wl")
    cluster.request_json("POST", CM.format(ns=ns), _cm("x"))
    query = "?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&labelSelector=test%3Dyes"
    events = _watch_lines(cluster, CM.format(ns=ns) + query, 2)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "x"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_delete_then_create_same_name_immediately(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-recreate")
    for _ in range(20):
        status, _ = cluster.request_json("POST", CM.format(ns=ns), _cm("again"))
        assert status == 201
        status, _ = cluster.request_json("DELETE", CM.format(ns=ns) + "/again")
        assert status == 200


def test_wrong_typed_bodies_for_every_kind_are_client_errors(cluster: TestCluster) -> None:
    _, core = cluster.request_json("GET", "/api/v1")
    targets = [("v1", "/api/v1", r) for r in core["resources"]]
    _, groups = cluster.request_json("GET", "/apis")
    for group in groups["groups"]:
        gv = group["preferredVersion"]["groupVersion"]
        _, listing = cluster.request_json("GET", f"/apis/{gv}")
        targets += [(gv, f"/apis/{gv}", r) for r in listing["resources"]]
    checked = 0
    for api_version, base, r in targets:
        if "/" in r["name"] or "create" not in r["verbs"]:
            continue
        path = f"{base}/namespaces/default/{r['name']}" if r["namespaced"] else f"{base}/{r['name']}"
        for field, value in (("spec", None), ("spec", 1), ("target", "x"), ("metadata", [])):
            body = {"apiVersion": api_version, "kind": r["kind"], "metadata": {"name": "typed-fuzz"}, field: value}
            status, answer = cluster.request_json("POST", path, body)
            assert status < 500, (r["kind"], body, answer)
            if status == 201:
                cluster.request_json("DELETE", f"{path}/typed-fuzz")
            checked += 1
    assert checked > 150


def test_crd_scale_subresource_follows_declared_paths(cluster: TestCluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "pools", "singular": "pool", "kind": "Pool"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size", "labelSelectorPath": ".status.selector"}},
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }  # fmt: skip
    status, _ = cluster.request_json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    path = "/apis/example.com/v1/namespaces/default/pools"
    cluster.wait_for(lambda: cluster.request_json("GET", path)[0] == 200, what="pools served")
    status, _ = cluster.request_json("POST", path, {"apiVersion": "example.com/v1", "kind": "Pool", "metadata": {"name": "p"}, "spec": {"size": 1}})
    assert status == 201
    out = cluster.kubectl("scale", "pool", "p", "--replicas=4", "-n", "default").stdout
    assert "pool.example.com/p scaled" in out
    _, pool = cluster.request_json("GET", path + "/p")
    assert pool["spec"]["size"] == 4
    _, scale = cluster.request_json("GET", path + "/p/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4


def test_exact_list_reads_history_and_continue_keeps_the_snapshot(cluster: TestCluster) -> None:
    ns = _ns(cluster, "sem-exact")
    _, first = cluster.request_json("POST", CM.format(ns=ns), _cm("e1"))
    cluster.request_json("POST", CM.format(ns=ns), _cm("e2"))
    rv = first["metadata"]["resourceVersion"]
    status, old = cluster.request_json("GET", CM.format(ns=ns) + f"?labelSelector=test%3Dyes&resourceVersion={rv}&resourceVersionMatch=Exact")
    assert status == 200 and [i["metadata"]["name"] for i in old["items"]] == ["e1"]
    assert old["metadata"]["resourceVersion"] == rv
    status, page = cluster.request_json("GET", CM.format(ns=ns) + "?labelSelector=test%3Dyes&limit=1")
    token = page["metadata"]["continue"]
    cluster.request_json("POST", CM.format(ns=ns), _cm("e3"))  # after the snapshot: not listed
    status, rest = cluster.request_json("GET", CM.format(ns=ns) + f"?labelSelector=test%3Dyes&limit=5&continue={token}")
    assert status == 200 and [i["metadata"]["name"] for i in rest["items"]] == ["e2"]
    assert rest["metadata"]["resourceVersion"] == page["metadata"]["resourceVersion"]
