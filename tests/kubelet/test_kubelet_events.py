"""What ``kubectl describe pod`` shows for pods on a real node: events in upstream's words and
order, a finished pod's volumes unmounted (its logs still served), and the imageID containerd
would report (``<repository>@<manifest digest>``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.runtime.images import ImageStore
from tests.cluster import TestCluster
from tests.kubelet.conftest import AgentNode, poll, wait_pod

Obj = dict[str, Any]



def pod_manifest(name: str, command: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", command],
                                 "volumeMounts": spec.pop("mounts", [])}], **spec},
    }


def events_of(cluster: TestCluster, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the pod's events, in the order they were first recorded."""
    listed = cluster.kubectl_json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    listed.sort(key=lambda e: int(e["metadata"]["name"].rsplit(".", 1)[1], 16)
                if e["metadata"]["name"].startswith(f"{name}.") else 0)
    return [(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in listed]


@pytest.fixture
def cluster(agent_cluster: tuple[TestCluster, AgentNode]) -> Iterator[TestCluster]:
    test_cluster, _node = agent_cluster
    yield test_cluster
    test_cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force", "--wait=false", check=False)


def test_failed_mount_names_the_volume(cluster: TestCluster) -> None:
    pod = pod_manifest("mount-missing", "true",
                       volumes=[{"name": "settings", "configMap": {"name": "absent"}}],
                       mounts=[{"name": "settings", "mountPath": "/settings"}])
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    wanted = ("Warning", "FailedMount", 'MountVolume.SetUp failed for volume "settings" : configmap "absent" not found')
    poll("the FailedMount event", lambda: wanted in events_of(cluster, "mount-missing"), 20)
    described = cluster.kubectl("describe", "pod", "mount-missing").stdout
    assert 'MountVolume.SetUp failed for volume "settings" : configmap "absent" not found' in described


def test_finished_pod_unmounts_its_tmpfs_keeps_its_logs_and_reports_the_repo_digest(
    agent_cluster: tuple[TestCluster, AgentNode], cluster: TestCluster
) -> None:
    _cluster, node = agent_cluster
    assert node.process is not None
    pod = pod_manifest("finished-ram", "grep -c ' /cache tmpfs' /proc/mounts",
                       volumes=[{"name": "cache", "emptyDir": {"medium": "Memory"}}],
                       mounts=[{"name": "cache", "mountPath": "/cache"}])
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    finished = wait_pod(cluster, "finished-ram", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded")
    uid = finished["metadata"]["uid"]
    mountinfo = Path(f"/proc/{node.process.pid}/mountinfo")
    poll("the finished pod's tmpfs unmounted on the agent",
         lambda: not [line for line in mountinfo.read_text().splitlines() if uid in line], 10)
    # The container saw its tmpfs while it ran, and its log outlives the mount.
    assert cluster.kubectl("logs", "finished-ram").stdout == "1\n"
    image_id = cluster.kubectl("get", "pod", "finished-ram", "-o",
                               "jsonpath={.status.containerStatuses[0].imageID}").stdout
    manifest = ImageStore(node.data_dir / "runtime" / "images").get("busybox").manifest_digest
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", manifest)
    assert image_id == f"docker.io/library/busybox@{manifest}"


def test_describe_shows_a_normal_start_and_stop_as_upstream(cluster: TestCluster) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod_manifest("lifecycle", "sleep 3600")))
    wait_pod(cluster, "lifecycle", lambda p: p["status"].get("phase") == "Running", "Running")
    expected = [
        ("Normal", "Scheduled", None),
        ("Normal", "Pulled", 'Container image "busybox" already present on machine'),
        ("Normal", "Created", "Created container main"),
        ("Normal", "Started", "Started container main"),
    ]

    def matches(events: list[tuple[str, str, str]], wanted: list[tuple[str, str, str | None]]) -> bool:
        return len(events) == len(wanted) and all(
            e[:2] == w[:2] and (w[2] is None or e[2] == w[2]) for e, w in zip(events, wanted, strict=True))

    poll("the start events", lambda: matches(events_of(cluster, "lifecycle"), expected), 10)
    assert events_of(cluster, "lifecycle")[0][2].startswith("Successfully assigned default/lifecycle to ")
    # kubectl describe lists them in that order, with upstream's reasons and words.
    described = cluster.kubectl("describe", "pod", "lifecycle").stdout.split("Events:", 1)[1]
    rows = [line.split()[:4] for line in described.strip().splitlines()[2:]]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("Normal", "Scheduled", "default-scheduler"), ("Normal", "Pulled", "kubelet"),
        ("Normal", "Created", "kubelet"), ("Normal", "Started", "kubelet")], described
    cluster.kubectl("delete", "pod", "lifecycle", "--wait=true", timeout=60)
    stopped = [*expected, ("Normal", "Killing", "Stopping container main")]
    poll("the Killing event", lambda: matches(events_of(cluster, "lifecycle"), stopped), 10)


def test_pod_stopped_by_its_deadline_gives_back_its_tmpfs(
    agent_cluster: tuple[TestCluster, AgentNode], cluster: TestCluster
) -> None:
    _cluster, node = agent_cluster
    assert node.process is not None
    pod = pod_manifest("deadline-ram", "echo started; sleep 3600", activeDeadlineSeconds=2,
                       volumes=[{"name": "cache", "emptyDir": {"medium": "Memory"}}],
                       mounts=[{"name": "cache", "mountPath": "/cache"}])
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    failed = wait_pod(cluster, "deadline-ram", lambda p: p["status"].get("reason") == "DeadlineExceeded",
                      "DeadlineExceeded")
    uid = failed["metadata"]["uid"]
    mountinfo = Path(f"/proc/{node.process.pid}/mountinfo")
    poll("the stopped pod's tmpfs unmounted on the agent",
         lambda: not [line for line in mountinfo.read_text().splitlines() if uid in line], 15)
    assert cluster.kubectl("logs", "deadline-ram").stdout == "started\n"
