"""Priority admission through real kubectl: system classes, class values, the default class.

One cluster for the module (no nodes: the pods only need to be admitted); a namespace per test.
"""

from __future__ import annotations

import json

from tests.cluster import TestCluster


def _pod(name: str, ns: str, **spec: object) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    })  # fmt: skip


def test_system_classes_listed_by_get_pc(cluster: TestCluster) -> None:
    rows = {line.split()[0]: line.split() for line in cluster.kubectl("get", "pc", "--no-headers").stdout.splitlines()}
    # NAME VALUE GLOBAL-DEFAULT AGE [PREEMPTIONPOLICY]
    assert rows["system-cluster-critical"][1:3] == ["2000000000", "false"]
    assert rows["system-node-critical"][1:3] == ["2000001000", "false"]


def test_class_sets_priority_and_policy(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "prio-class")
    cluster.kubectl("create", "priorityclass", "batch-low", "--value=100", "--preemption-policy=Never")
    cluster.kubectl("apply", "-f", "-", input=_pod("low", "prio-class", priorityClassName="batch-low"))
    spec = cluster.kubectl_json("get", "pod", "low", "-n", "prio-class")["spec"]
    assert (spec["priority"], spec["preemptionPolicy"]) == (100, "Never")
    critical = cluster.kubectl("apply", "-f", "-", input=_pod("crit", "prio-class", priorityClassName="system-node-critical"))
    assert "pod/crit created" in critical.stdout
    assert cluster.kubectl_json("get", "pod", "crit", "-n", "prio-class")["spec"]["priority"] == 2000001000


def test_unknown_class_is_forbidden(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "prio-unknown")
    result = cluster.kubectl("apply", "-f", "-", input=_pod("x", "prio-unknown", priorityClassName="nope"), check=False)
    assert result.returncode != 0
    assert 'pods "x" is forbidden: no PriorityClass with name nope was found' in result.stderr
    assert 'pods "x" not found' in cluster.kubectl("get", "pod", "x", "-n", "prio-unknown", check=False).stderr


def test_stated_priority_must_match_class(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "prio-stated")
    cluster.kubectl("create", "priorityclass", "mid", "--value=500")
    result = cluster.kubectl("apply", "-f", "-", input=_pod("p", "prio-stated", priorityClassName="mid", priority=7),
                             check=False)
    assert result.returncode != 0
    assert ('pods "p" is forbidden: the integer value of priority (7) must not be provided in pod spec; '
            "priority admission controller computed 500 from the given PriorityClass name") in result.stderr
    same = cluster.kubectl("apply", "-f", "-", input=_pod("q", "prio-stated", priorityClassName="mid", priority=500))
    assert "pod/q created" in same.stdout


def test_default_class_and_only_one_default(cluster: TestCluster) -> None:
    cluster.kubectl("create", "namespace", "prio-default")
    cluster.kubectl("apply", "-f", "-", input=_pod("before", "prio-default"))
    before = cluster.kubectl_json("get", "pod", "before", "-n", "prio-default")["spec"]
    assert (before["priority"], before["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert "priorityClassName" not in before
    cluster.kubectl("create", "priorityclass", "everyone", "--value=42", "--global-default")
    try:
        # The watch cache may trail the create by a moment: poll until the default applies.
        def admitted() -> dict | None:
            name = f"after-{admitted.tries}"  # type: ignore[attr-defined]
            admitted.tries += 1  # type: ignore[attr-defined]
            cluster.kubectl("apply", "-f", "-", input=_pod(name, "prio-default"))
            spec = cluster.kubectl_json("get", "pod", name, "-n", "prio-default")["spec"]
            return spec if spec.get("priorityClassName") == "everyone" else None

        admitted.tries = 0  # type: ignore[attr-defined]
        spec = cluster.wait_for(admitted, timeout=10, what="pods admitted with the default class")
        assert spec["priority"] == 42
        second = cluster.kubectl("create", "priorityclass", "another", "--value=43", "--global-default", check=False)
        assert second.returncode != 0
        assert ('priorityclasses.scheduling.k8s.io "another" is forbidden: PriorityClass another is marked as default '
                "and another default already exists: everyone") in second.stderr
        # Nor can an existing class become a second default.
        cluster.kubectl("create", "priorityclass", "another", "--value=43")
        promoted = cluster.kubectl("patch", "priorityclass", "another", "-p", '{"globalDefault":true}', check=False)
        assert promoted.returncode != 0
        assert "PriorityClass another is marked as default and another default already exists: everyone" in promoted.stderr
        cluster.kubectl("patch", "priorityclass", "everyone", "-p", '{"description":"still the default"}')
    finally:
        cluster.kubectl("delete", "priorityclass", "everyone", "another", "--ignore-not-found")


def test_pods_created_in_process_are_admitted_too(cluster: TestCluster) -> None:
    # The ReplicaSet controller creates its pods through the in-process transport.
    cluster.kubectl("create", "namespace", "prio-inproc")
    cluster.kubectl("create", "priorityclass", "web-tier", "--value=300", "--preemption-policy=Never")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prio-inproc"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"priorityClassName": "web-tier", "containers": [{"name": "web", "image": "nginx"}]}}},
    }))  # fmt: skip

    def admitted() -> list[tuple[int, str]] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", "prio-inproc")["items"]
        found = [(p["spec"].get("priority"), p["spec"].get("preemptionPolicy")) for p in pods
                 if p["spec"].get("priorityClassName") == "web-tier"]
        return found if len(found) >= 2 else None

    assert set(cluster.wait_for(admitted, timeout=30, what="ReplicaSet pods with web-tier")) == {(300, "Never")}
