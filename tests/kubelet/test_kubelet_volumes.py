"""Pod volumes on a real node, seen from inside the containers with kubectl exec.

Claims of the default (local-path) class, subPath/subPathExpr, memory-backed emptyDirs (and
their unmount), read-only mounts of every kind, ConfigMap/Secret/downward-API updates reaching a
running pod, and the eviction of a pod whose emptyDir outgrows its sizeLimit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.runtime.archive import import_archive
from k3py.runtime.cgroups import Cgroup
from k3py.runtime.containers import ContainerError, ContainerRuntime
from k3py.runtime.spec import ContainerSpec, Mount
from tests.cluster import TestCluster
from tests.kubelet.conftest import AgentNode, busybox_archive, poll, wait_pod

Obj = dict[str, Any]


def running(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") == "Running"


def pod_manifest(name: str, command: str, volumes: list[Obj], mounts: list[Obj], **container: Any) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "restartPolicy": "Never", "volumes": volumes,
                 "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", command], "volumeMounts": mounts, **container}]},
    }


def apply(cluster: TestCluster, *objects: Obj) -> None:
    # create, not apply: apply's last-applied annotation would show in downward-API files
    cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def sh(cluster: TestCluster, pod: str, script: str) -> str:
    """stdout+stderr of a shell script run in the pod (kubectl exec); never raises."""
    result = cluster.kubectl("exec", pod, "--", "sh", "-c", script + " 2>&1", check=False)
    return result.stdout + result.stderr



def waiting_reason(pod: Obj) -> tuple[str, str]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    waiting = statuses[0].get("state", {}).get("waiting") or {}
    return waiting.get("reason", ""), waiting.get("message", "")


def events_of(cluster: TestCluster, name: str) -> str:
    return cluster.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                           "-o", "custom-columns=REASON:.reason,MESSAGE:.message").stdout


@pytest.fixture
def cluster(agent_cluster: tuple[TestCluster, AgentNode]) -> Iterator[TestCluster]:
    test_cluster, _node = agent_cluster
    yield test_cluster
    test_cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force", "--wait=false", check=False)


def test_claim_keeps_data_across_pods_and_waits_until_it_exists(cluster: TestCluster) -> None:
    storage: list[Path] = []
    try:
        # A pod whose claim does not exist yet waits in ContainerCreating with a FailedMount event.
        # Not root: a fresh local-path claim is writable by any user, as k3s makes it.
        writer = pod_manifest("pvc-writer", "echo kept > /data/file && echo written",
                              [{"name": "data", "persistentVolumeClaim": {"claimName": "store"}}],
                              [{"name": "data", "mountPath": "/data"}],
                              securityContext={"runAsUser": 1000, "runAsGroup": 1000})
        apply(cluster, writer)
        poll("FailedMount for the missing claim",
             lambda: 'persistentvolumeclaims "store" not found' in events_of(cluster, "pvc-writer"), 20)
        pod = cluster.kubectl_json("get", "pod", "pvc-writer")
        assert waiting_reason(pod)[0] == "ContainerCreating" and pod["status"]["phase"] == "Pending"
        assert "FailedMount" in events_of(cluster, "pvc-writer")
        apply(cluster, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "store"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}})
        claim = poll("claim Bound", lambda: (lambda c: c if c["status"].get("phase") == "Bound" else None)(
            cluster.kubectl_json("get", "pvc", "store")), 20)
        volume = cluster.kubectl_json("get", "pv", claim["spec"]["volumeName"])
        storage.append(Path(volume["spec"]["hostPath"]["path"]))
        wait_pod(cluster, "pvc-writer", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded", timeout=30)
        assert cluster.kubectl("logs", "pvc-writer").stdout == "written\n"
        cluster.kubectl("delete", "pod", "pvc-writer", "--grace-period=0", "--force")
        # A second pod on the same claim reads the file back; read-only claims refuse writes.
        reader = pod_manifest("pvc-reader", "sleep 3600",
                              [{"name": "data", "persistentVolumeClaim": {"claimName": "store", "readOnly": True}}],
                              [{"name": "data", "mountPath": "/data"}])
        apply(cluster, reader)
        wait_pod(cluster, "pvc-reader", running, "Running")
        assert sh(cluster, "pvc-reader", "cat /data/file") == "kept\n"
        assert "Read-only file system" in sh(cluster, "pvc-reader", "touch /data/new")
        assert (storage[0] / "file").read_text() == "kept\n" and (storage[0] / "file").stat().st_uid == 1000
    finally:
        cluster.kubectl("delete", "pod", "pvc-writer", "pvc-reader", "--grace-period=0", "--force",
                        "--ignore-not-found", check=False)
        cluster.kubectl("delete", "pvc", "store", "--ignore-not-found", "--wait=false", check=False)
        for path in storage:
            shutil.rmtree(path, ignore_errors=True)


def test_sub_path_and_sub_path_expr(cluster: TestCluster) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subcfg"},
              "data": {"greeting": "hello\n", "other": "x", "tier": "gold"}}
    pod = pod_manifest(
        "subpaths", "echo a > /ab/a-file; echo m > /mine/m-file; echo t > /tier/t-file; sleep 3600",
        [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "subcfg"}}],
        [{"name": "work", "mountPath": "/ab", "subPath": "a/b"},
         {"name": "work", "mountPath": "/mine", "subPathExpr": "pods/$(POD_NAME)"},
         {"name": "work", "mountPath": "/tier", "subPathExpr": "tiers/$(TIER)"},
         {"name": "work", "mountPath": "/all"},
         {"name": "cfg", "mountPath": "/etc/greeting", "subPath": "greeting"}],
        env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "TIER", "valueFrom": {"configMapKeyRef": {"name": "subcfg", "key": "tier"}}}],
    )
    apply(cluster, config, pod)
    wait_pod(cluster, "subpaths", running, "Running")
    assert poll("files written", lambda: sh(cluster, "subpaths", "cat /all/a/b/a-file /all/pods/subpaths/m-file /all/tiers/gold/t-file")
                == "a\nm\nt\n", 10)
    assert sh(cluster, "subpaths", "cat /etc/greeting; ls /etc/greeting") == "hello\n/etc/greeting\n"
    # Absolute and escaping sub-paths are refused with the kubelet's words.
    bad = [
        pod_manifest("sub-absolute", "true", [{"name": "work", "emptyDir": {}}],
                     [{"name": "work", "mountPath": "/w", "subPath": "/etc"}]),
        pod_manifest("sub-escape", "true", [{"name": "work", "emptyDir": {}}],
                     [{"name": "work", "mountPath": "/w", "subPathExpr": "$(UP)/etc"}],
                     env=[{"name": "UP", "value": "../.."}]),
    ]
    apply(cluster, *bad)
    for name, message in (("sub-absolute", "error SubPath `/etc` must not be an absolute path"),
                          ("sub-escape", "unable to provision SubPath `../../etc`: must not contain '..'")):
        pod = wait_pod(cluster, name, lambda p: waiting_reason(p)[0] == "CreateContainerConfigError",
                       "CreateContainerConfigError")
        assert waiting_reason(pod)[1] == message


def test_memory_empty_dir_is_a_sized_tmpfs_unmounted_with_the_pod(
    agent_cluster: tuple[TestCluster, AgentNode], cluster: TestCluster
) -> None:
    _cluster, node = agent_cluster
    assert node.process is not None
    pod = pod_manifest("ramdisk", "sleep 3600", [{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
                       [{"name": "cache", "mountPath": "/cache"}])
    apply(cluster, pod)
    uid = wait_pod(cluster, "ramdisk", running, "Running")["metadata"]["uid"]
    assert sh(cluster, "ramdisk", "grep ' /cache ' /proc/mounts | cut -d' ' -f1,3") == "tmpfs tmpfs\n"
    assert sh(cluster, "ramdisk", "df -k /cache | tail -1 | awk '{print $2}'") == "8192\n"
    assert "No space left on device" in sh(cluster, "ramdisk", "dd if=/dev/zero of=/cache/big bs=1M count=9")
    mountinfo = Path(f"/proc/{node.process.pid}/mountinfo")

    def agent_mounts() -> list[str]:
        return [line for line in mountinfo.read_text().splitlines() if uid in line]

    assert len(agent_mounts()) == 1 and " tmpfs " in agent_mounts()[0]
    cluster.kubectl("delete", "pod", "ramdisk", "--grace-period=1", "--wait=true", timeout=60)
    poll("the tmpfs unmounted", lambda: not agent_mounts(), 10)
    assert not (node.data_dir / "pods" / uid).exists()
    # A force-deleted pod is torn down as an orphan: its tmpfs goes too.
    apply(cluster, {**pod, "metadata": {"name": "ramdisk-forced"}})
    uid = wait_pod(cluster, "ramdisk-forced", running, "Running")["metadata"]["uid"]
    assert len(agent_mounts()) == 1
    cluster.kubectl("delete", "pod", "ramdisk-forced", "--grace-period=0", "--force")
    poll("the orphan's tmpfs unmounted", lambda: not agent_mounts() and not (node.data_dir / "pods" / uid).exists(), 20)


def test_read_only_mounts_refuse_writes_for_every_volume_type(cluster: TestCluster, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    apply(cluster,
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rocfg"}, "data": {"k": "v"}},
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rosecret"}, "stringData": {"s": "v"}})
    volumes = [
        {"name": "empty", "emptyDir": {}},
        {"name": "ram", "emptyDir": {"medium": "Memory"}},
        {"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}},
        {"name": "cfg", "configMap": {"name": "rocfg"}},
        {"name": "sec", "secret": {"secretName": "rosecret"}},
        {"name": "down", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "proj", "projected": {"sources": [{"configMap": {"name": "rocfg"}}]}},
    ]
    mounts = [{"name": "empty", "mountPath": "/ro/empty", "readOnly": True},
              {"name": "empty", "mountPath": "/rw/empty"},
              {"name": "ram", "mountPath": "/ro/ram", "readOnly": True},
              {"name": "host", "mountPath": "/ro/host", "readOnly": True},
              {"name": "host", "mountPath": "/rw/host"},
              {"name": "cfg", "mountPath": "/ro/cfg"},
              {"name": "sec", "mountPath": "/ro/sec"},
              {"name": "down", "mountPath": "/ro/down"},
              {"name": "proj", "mountPath": "/ro/proj"}]
    apply(cluster, pod_manifest("readonly", "sleep 3600", volumes, mounts))
    wait_pod(cluster, "readonly", running, "Running")
    script = "for d in /ro/* /rw/*; do touch $d/new && echo $d writable || echo $d refused; done"
    lines = sh(cluster, "readonly", script).splitlines()
    refused = sorted(line.removeprefix("touch: ").removesuffix("/new: Read-only file system")
                     for line in lines if line.endswith(": Read-only file system"))
    assert refused == ["/ro/cfg", "/ro/down", "/ro/empty", "/ro/host", "/ro/proj", "/ro/ram", "/ro/sec"], lines
    assert "/rw/empty writable" in lines and "/rw/host writable" in lines
    assert (host_dir / "new").exists()


def test_config_secret_and_downward_volumes_follow_updates(cluster: TestCluster) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live"},
              "data": {"color": "blue", "size": "L"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "live-secret"},
              "stringData": {"password": "one"}}
    volumes = [
        {"name": "cfg", "configMap": {"name": "live", "items": [{"key": "color", "path": "colors/now"}],
                                      "defaultMode": 0o640}},
        {"name": "sec", "secret": {"secretName": "live-secret", "defaultMode": 0o400}},
        {"name": "absent", "configMap": {"name": "not-there", "optional": True}},
        {"name": "down", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                   {"path": "annotations",
                                                    "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "all", "projected": {"defaultMode": 0o444, "sources": [
            {"configMap": {"name": "live", "items": [{"key": "size", "path": "size"}]}},
            {"secret": {"name": "live-secret"}},
            {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
    ]
    mounts = [{"name": n, "mountPath": f"/v/{n}"} for n in ("cfg", "sec", "absent", "down", "all")]
    pod = pod_manifest("follower", "sleep 3600", volumes, mounts)
    pod["metadata"]["labels"] = {"tier": "web"}
    pod["metadata"]["annotations"] = {"note": "first"}
    apply(cluster, config, secret, pod)
    wait_pod(cluster, "follower", running, "Running")
    assert sh(cluster, "follower", "cat /v/cfg/colors/now; echo; stat -L -c %a /v/cfg/colors/now; ls /v/cfg") == \
        "blue\n640\ncolors\n"
    assert sh(cluster, "follower", "cat /v/sec/password; echo; stat -L -c %a /v/sec/password") == "one\n400\n"
    assert sh(cluster, "follower", "ls /v/absent") == ""  # an empty volume (only the ..data link)
    assert sh(cluster, "follower", "cat /v/down/labels; echo; cat /v/down/annotations") == 'tier="web"\nnote="first"'
    assert sh(cluster, "follower", "cat /v/all/size /v/all/password /v/all/name; stat -L -c %a /v/all/size") == \
        "Lonefollower444\n"
    cluster.kubectl("patch", "configmap", "live", "--type=merge", "-p", '{"data": {"color": "red", "size": "XL"}}')
    cluster.kubectl("patch", "secret", "live-secret", "--type=merge", "-p", '{"stringData": {"password": "two"}}')
    # Within the kubelet's one-minute resync (plus a margin), without touching the pod.
    poll("ConfigMap and Secret updates in the volumes",
         lambda: sh(cluster, "follower", "cat /v/cfg/colors/now /v/sec/password /v/all/size /v/all/password")
         == "redtwoXLtwo", 75)
    cluster.kubectl("label", "pod", "follower", "tier=api", "--overwrite")
    cluster.kubectl("annotate", "pod", "follower", "note=second", "--overwrite")
    poll("labels and annotations files updated",
         lambda: sh(cluster, "follower", "cat /v/down/labels; echo; cat /v/down/annotations")
         == 'tier="api"\nnote="second"', 20)


def test_empty_dir_over_its_size_limit_evicts_the_pod(cluster: TestCluster) -> None:
    pod = pod_manifest("hog", "dd if=/dev/zero of=/scratch/fill bs=1M count=3; sleep 3600",
                       [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
                       [{"name": "scratch", "mountPath": "/scratch"}])
    apply(cluster, pod)
    evicted = wait_pod(cluster, "hog", lambda p: p["status"].get("phase") == "Failed", "Failed (evicted)", timeout=40)
    message = 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".'
    assert evicted["status"]["reason"] == "Evicted" and evicted["status"]["message"] == message
    assert "Evicted" in events_of(cluster, "hog")
    statuses = wait_pod(cluster, "hog", lambda p: "terminated" in p["status"]["containerStatuses"][0]["state"],
                        "container stopped")["status"]["containerStatuses"]
    assert statuses[0]["state"]["terminated"]["exitCode"] != 0


def test_sub_path_swapped_for_a_symlink_after_the_check_is_refused(tmp_path: Path) -> None:
    """The race upstream's subPath CVEs used: the kubelet resolved ``vol/sub`` to a real directory,
    then a container replaced a component with a symlink to the host. The container init binds
    the checked path exactly, or refuses."""
    runtime = ContainerRuntime(tmp_path / "rt", cgroup_parent=f"k3py-test-{secrets.token_hex(4)}",
                               isolate_mounts=True)
    import_archive(runtime.images, busybox_archive())
    volume = tmp_path / "vol"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "inside").write_text("volume data\n")
    checked = str(volume / "sub")  # what the kubelet resolved and checked
    spec = ContainerSpec(name="t", image="busybox", command=["cat", "/m/inside"],
                         mounts=[Mount("/m", source=checked, exact_source=True)])
    try:
        cid = runtime.run(spec)
        status = runtime.wait_container(cid, 30)
        assert status.exit_code == 0 and Path(status.log_path).read_text().endswith(" volume data\n")
        runtime.remove_container(cid, force=True)
        # The container's move: the checked directory becomes a symlink to a host directory.
        host_secret = tmp_path / "host-only"
        host_secret.mkdir()
        (host_secret / "inside").write_text("host data\n")
        shutil.rmtree(volume / "sub")
        os.symlink(host_secret, volume / "sub")
        with pytest.raises(ContainerError, match="changed since it was checked"):
            runtime.run(spec)
    finally:
        for container in runtime.list_containers():
            runtime.remove_container(container.id, force=True)
        runtime.shutdown_supervisor(force=True)
        for directory in Cgroup(runtime.cgroup_parent, "").dirs.values():
            poll(f"{directory} removed", lambda d=directory: not os.path.isdir(d) or _rmdir(d), 10)


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)  # busy until the supervisor's last process has left it
    except OSError:
        return False
    return True


def test_stateful_set_pod_gets_its_claim_back_after_deletion(cluster: TestCluster) -> None:
    """volumeClaimTemplates: the StatefulSet's claim outlives the pod; the replacement pod of the
    same identity mounts the same data."""
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "keeper"},
        "spec": {
            "serviceName": "keeper", "replicas": 1, "selector": {"matchLabels": {"app": "keeper"}},
            "template": {"metadata": {"labels": {"app": "keeper"}}, "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                "command": ["sh", "-c", "[ -f /data/first ] || hostname > /data/first; sleep 3600"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}],
        },
    }
    storage: list[Path] = []
    try:
        apply(cluster, sts)
        first = wait_pod(cluster, "keeper-0", running, "Running", timeout=40)
        claim = cluster.kubectl_json("get", "pvc", "data-keeper-0")
        storage.append(Path(cluster.kubectl_json("get", "pv", claim["spec"]["volumeName"])["spec"]["hostPath"]["path"]))
        assert poll("the first file", lambda: sh(cluster, "keeper-0", "cat /data/first") == "keeper-0\n", 10)
        sh(cluster, "keeper-0", "echo more > /data/second")
        cluster.kubectl("delete", "pod", "keeper-0", "--grace-period=0", "--force")
        wait_pod(cluster, "keeper-0", lambda p: running(p) and p["metadata"]["uid"] != first["metadata"]["uid"],
                 "the replacement Running", timeout=40)
        assert sh(cluster, "keeper-0", "cat /data/first /data/second") == "keeper-0\nmore\n"
    finally:
        cluster.kubectl("delete", "statefulset", "keeper", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "pod", "keeper-0", "--grace-period=0", "--force", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "pvc", "data-keeper-0", "--ignore-not-found", "--wait=false", check=False)
        for path in storage:
            shutil.rmtree(path, ignore_errors=True)
