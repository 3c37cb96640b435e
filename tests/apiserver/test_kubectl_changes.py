"""Real kubectl changing objects: apply, label/annotate, patch (3 types), replace, scale, delete, watch.

One cluster for the module; each test uses its own namespace so the tests stay independent.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import yaml

from tests.cluster import TestCluster, find_kubectl


def _ns(cluster: TestCluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def test_apply_create_change_apply_again(cluster: TestCluster) -> None:
    ns = _ns(cluster, "apply")
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"tier": "web"}},
        "data": {"a": "1"},
    }
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest)).stdout
    assert "configmap/cfg created" in out
    manifest["data"] = {"a": "2", "b": "3"}
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest)).stdout
    assert "configmap/cfg configured" in out
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest)).stdout
    assert "configmap/cfg unchanged" in out
    cm = cluster.kubectl_json("get", "cm", "cfg", "-n", ns)
    assert cm["data"] == {"a": "2", "b": "3"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in cm["metadata"]["annotations"]


def test_apply_deployment_then_change_image(cluster: TestCluster) -> None:
    ns = _ns(cluster, "apply-deploy")
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
        },
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(dep))
    first = cluster.kubectl_json("get", "deploy", "web", "-n", ns)
    assert first["metadata"]["generation"] == 1
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(dep)).stdout
    assert "deployment.apps/web configured" in out
    second = cluster.kubectl_json("get", "deploy", "web", "-n", ns)
    assert second["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert second["metadata"]["generation"] == 2
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_labels_selectors_and_all_namespaces(cluster: TestCluster) -> None:
    ns = _ns(cluster, "labels")
    for name, layer in (("a", "web"), ("b", "db"), ("c", "web")):
        cluster.kubectl("create", "configmap", name, "-n", ns)
        cluster.kubectl("label", "configmap", name, f"layer={layer}", "-n", ns)
    shown = cluster.kubectl("get", "cm", "a", "-n", ns, "--show-labels").stdout
    assert "layer=web" in shown
    eq = cluster.kubectl("get", "cm", "-n", ns, "-l", "layer=web", "-o", "name").stdout.split()
    assert eq == ["configmap/a", "configmap/c"]
    in_set = cluster.kubectl("get", "cm", "-n", ns, "-l", "layer in (db)", "-o", "name").stdout.split()
    assert in_set == ["configmap/b"]
    not_in = cluster.kubectl("get", "cm", "-n", ns, "-l", "layer notin (web),layer", "-o", "name").stdout.split()
    assert not_in == ["configmap/b"]
    everywhere = cluster.kubectl("get", "cm", "-A", "-l", "layer=web").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[:2] for line in everywhere[1:]] == [[ns, "a"], [ns, "c"]]
    cluster.kubectl("label", "configmap", "a", "layer-", "-n", ns)
    assert "layer" not in (cluster.kubectl_json("get", "cm", "a", "-n", ns)["metadata"].get("labels") or {})
    cluster.kubectl("annotate", "configmap", "a", "note=hello", "-n", ns)
    assert cluster.kubectl_json("get", "cm", "a", "-n", ns)["metadata"]["annotations"]["note"] == "hello"


def test_patch_all_three_types_and_replace(cluster: TestCluster) -> None:
    ns = _ns(cluster, "patch")
    cluster.kubectl("create", "deployment", "web", "--image=nginx:1.25", "-n", ns)
    cluster.kubectl("patch", "deploy", "web", "-n", ns, "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}')
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", ns)
    assert [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["nginx:1.26"]
    cluster.kubectl("patch", "deploy", "web", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":3}}')
    cluster.kubectl("patch", "deploy", "web", "-n", ns, "--type=json", "-p", '[{"op":"add","path":"/spec/minReadySeconds","value":5}]')
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", ns)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["minReadySeconds"] == 5

    # The deployment controller writes the status while the rollout goes on, so a replace built
    # from a read can lose to it (a correct 409); like a user, read again and retry.
    def replace_from_fresh_read() -> dict | None:
        fresh = cluster.kubectl_json("get", "deploy", "web", "-n", ns)
        fresh["spec"]["replicas"] = 4
        fresh.pop("status", None)
        done = cluster.kubectl("replace", "-f", "-", input=json.dumps(fresh), check=False)
        return fresh if done.returncode == 0 else None

    dep = cluster.wait_for(replace_from_fresh_read, what="a replace from a fresh read")
    assert cluster.kubectl_json("get", "deploy", "web", "-n", ns)["spec"]["replicas"] == 4
    stale = cluster.kubectl("replace", "-f", "-", input=json.dumps(dep), check=False)
    assert stale.returncode != 0
    assert (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again" in stale.stderr
    )


def test_scale_subresource(cluster: TestCluster) -> None:
    ns = _ns(cluster, "scale")
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "-n", ns)
    out = cluster.kubectl("scale", "deploy", "web", "--replicas=5", "-n", ns).stdout
    assert "deployment.apps/web scaled" in out
    assert cluster.kubectl_json("get", "deploy", "web", "-n", ns)["spec"]["replicas"] == 5


def test_delete_wait_and_by_label(cluster: TestCluster) -> None:
    ns = _ns(cluster, "delete")
    for name in ("a", "b", "c"):
        cluster.kubectl("create", "configmap", name, "-n", ns)
    cluster.kubectl("label", "cm", "b", "c", "gone=yes", "-n", ns)
    out = cluster.kubectl("delete", "cm", "a", "-n", ns, "--wait").stdout
    assert 'configmap "a" deleted' in out
    out = cluster.kubectl("delete", "cm", "-l", "gone=yes", "-n", ns).stdout
    assert 'configmap "b" deleted' in out and 'configmap "c" deleted' in out
    left = cluster.kubectl("get", "cm", "-n", ns, "-o", "name").stdout.split()
    assert not {"configmap/a", "configmap/b", "configmap/c"} & set(left)


def test_get_watch_sees_added_modified_deleted(cluster: TestCluster) -> None:
    ns = _ns(cluster, "watch")
    argv = cluster.host.exec_argv([  # type: ignore[union-attr]
        find_kubectl(), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.cache_dir / "default"),
        "get", "cm", "-n", ns, "-w", "--output-watch-events", "-l", "watched=yes", "--no-headers",
    ])  # fmt: skip
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()

    def next_line(deadline: float) -> str:
        try:
            return lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no watch line in time; kubectl stderr: {watcher.stderr}") from None

    def watched(name: str) -> str:
        return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"watched": "yes"}}})

    try:
        # The watch is established once the first object shows up (from the initial list or
        # from the watch itself); only then are the changes under test made.
        cluster.kubectl("create", "-n", ns, "-f", "-", input=watched("w0"))
        deadline = time.monotonic() + 20
        assert next_line(deadline).split()[:2] == ["ADDED", "w0"]
        cluster.kubectl("create", "-n", ns, "-f", "-", input=watched("w1"))
        cluster.kubectl("label", "cm", "w1", "x=y", "-n", ns)
        cluster.kubectl("delete", "cm", "w1", "-n", ns)
        seen: list[list[str]] = []
        while not seen or seen[-1][0] != "DELETED":
            seen.append(next_line(deadline).split()[:2])
        assert seen == [["ADDED", "w1"], ["MODIFIED", "w1"], ["DELETED", "w1"]]
    finally:
        watcher.kill()
        watcher.wait()
        reader.join(timeout=5)


def test_unknown_fields_are_refused_under_strict_and_warned_otherwise(cluster: TestCluster) -> None:
    ns = _ns(cluster, "fieldval")
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "datta": {"a": "1"}}
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert refused.returncode == 1
    assert (
        'Error from server (BadRequest): error when creating "STDIN": ConfigMap in version "v1" '
        'cannot be handled as a ConfigMap: strict decoding error: unknown field "datta"'
    ) in refused.stderr
    warned = cluster.kubectl("create", "--validate=warn", "-n", ns, "-f", "-", input=yaml.safe_dump(bad))
    assert 'Warning: unknown field "datta"' in warned.stderr
    dup = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}'
    status, body, _ = cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict", dup, {"Content-Type": "application/json"}
    )
    assert status == 400 and 'duplicate field \\"a\\"' in body.decode()


def test_server_side_apply_creates_then_merges(cluster: TestCluster) -> None:
    ns = _ns(cluster, "ssa")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1"}}
    out = cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump(cm)).stdout
    assert "configmap/s serverside-applied" in out
    cm["data"]["b"] = "2"
    cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump(cm))
    got = cluster.kubectl_json("get", "cm", "s", "-n", ns, "--show-managed-fields")
    assert got["data"] == {"a": "1", "b": "2"}
    managers = [(m["manager"], m["operation"]) for m in got["metadata"]["managedFields"]]
    assert ("kubectl", "Apply") in managers
    del cm["data"]["a"]  # a field the applier stops applying is removed
    cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump(cm))
    assert cluster.kubectl_json("get", "cm", "s", "-n", ns)["data"] == {"b": "2"}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"b": "other"}}
    clash = cluster.kubectl("apply", "--server-side", "--field-manager=other", "-n", ns, "-f", "-", input=yaml.safe_dump(other), check=False)
    assert clash.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.b' in clash.stderr
    cluster.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-n", ns, "-f", "-", input=yaml.safe_dump(other))
    assert cluster.kubectl_json("get", "cm", "s", "-n", ns)["data"] == {"b": "other"}


def test_diff_and_explain(cluster: TestCluster) -> None:
    ns = _ns(cluster, "diff")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d", "namespace": ns}, "data": {"a": "1"}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(cm))
    same = cluster.kubectl("diff", "-f", "-", input=yaml.safe_dump(cm), check=False)
    assert same.returncode == 0 and same.stdout == ""
    cm["data"]["a"] = "2"
    changed = cluster.kubectl("diff", "-f", "-", input=yaml.safe_dump(cm), check=False)
    assert changed.returncode == 1
    assert '-  a: "1"' in changed.stdout and '+  a: "2"' in changed.stdout
    assert cluster.kubectl_json("get", "cm", "d", "-n", ns)["data"] == {"a": "1"}  # diff is a dry run
    explained = cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "FIELD: replicas <integer>" in explained


def test_create_keeps_a_nodes_status_and_resets_a_workloads(cluster: TestCluster) -> None:
    # The kubelet registers its Node with status; upstream's Node strategy keeps it on create,
    # while workload strategies start every object with an empty status.
    node = {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "registered-node"},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            "nodeInfo": {"kubeletVersion": "v1.32.4", "architecture": "amd64", "operatingSystem": "linux"},
        },
    }  # fmt: skip
    # What the create answers is what was stored (the node lifecycle controller later marks
    # this lease-less node Unknown).
    created = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=yaml.safe_dump(node)).stdout)
    try:
        assert created["status"]["capacity"] == {"cpu": "4", "memory": "8Gi", "pods": "110"}
        assert created["status"]["allocatable"] == created["status"]["capacity"]  # defaulted from capacity
        assert [(c["type"], c["reason"]) for c in created["status"]["conditions"]] == [("Ready", "KubeletReady")]
        assert created["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.4"
        row = cluster.kubectl("get", "node", "registered-node", "--no-headers").stdout.split()
        assert row[0] == "registered-node" and row[-1] == "v1.32.4"
    finally:
        cluster.kubectl("delete", "node", "registered-node")
    ns = _ns(cluster, "status-on-create")
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            # Sent as 1.32 clients do; a 1.32 API server echoes the null (1.33 started omitting it).
            "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
        "status": {"replicas": 7, "readyReplicas": 7},
    }  # fmt: skip
    created = json.loads(cluster.kubectl("create", "-n", ns, "-f", "-", "-o", "json", input=json.dumps(dep)).stdout)
    assert created["status"].get("replicas") in (None, 0) and "readyReplicas" not in created["status"]
    assert created["spec"]["template"]["metadata"] == {"creationTimestamp": None, "labels": {"app": "web"}}


def test_status_writes_keep_the_creators_managed_fields(cluster: TestCluster) -> None:
    ns = _ns(cluster, "owners")
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "-n", ns)
    dep = cluster.wait_for(
        lambda: (d := cluster.kubectl_json("get", "deploy", "web", "-n", ns, "--show-managed-fields"))
        .get("status", {}).get("observedGeneration") and d,
        what="the deployment controller's status",
    )
    entries = {(e["manager"], e.get("subresource", "")): e for e in dep["metadata"]["managedFields"]}
    creator = entries[("kubectl-create", "")]
    assert "f:replicas" in creator["fieldsV1"]["f:spec"]
    status_owners = [e for (_, sub), e in entries.items() if sub == "status"]
    assert status_owners and all("f:status" in e["fieldsV1"] for e in status_owners)
