"""Pure volume rules of the kubelet: claims → PV sources, subPath checks, tmpfs sizes, du, mounts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k3py.agent.kubelet.volumes import (
    MountWait,
    PodVolumes,
    VolumeError,
    VolumeSetUpErrors,
    bound_volume_name,
    claim_source,
    claimed_volumes,
    disk_usage,
    failed_mount_message,
    memory_volume_size,
    mount_timeout_error,
    plan_mounts,
    sub_path_of,
    subpath_env,
    unmounted_volumes_error,
)

CLAIM = {
    "metadata": {"name": "data", "namespace": "default", "uid": "u-1"},
    "spec": {"volumeName": "pvc-u-1"},
    "status": {"phase": "Bound"},
}
PV = {
    "metadata": {"name": "pvc-u-1"},
    "spec": {"hostPath": {"path": "/var/lib/k3py/storage/pvc-u-1_default_data", "type": "DirectoryOrCreate"},
             "claimRef": {"name": "data", "namespace": "default", "uid": "u-1"}},
}


def test_claims_resolve_to_their_bound_volume_with_upstream_errors() -> None:
    pod = {"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
                                {"name": "e", "emptyDir": {}}]}}
    assert claimed_volumes(pod) == {"v": "data"}
    assert bound_volume_name("default", "data", CLAIM) == "pvc-u-1"
    with pytest.raises(VolumeError, match=r'^error processing PVC default/gone: failed to fetch PVC from API '
                                          r'server: persistentvolumeclaims "gone" not found$'):
        bound_volume_name("default", "gone", None)
    pending = {**CLAIM, "spec": {}, "status": {"phase": "Pending"}}
    with pytest.raises(VolumeError, match=r"^error processing PVC default/data: PVC is not bound$"):
        bound_volume_name("default", "data", pending)
    assert claim_source("default", CLAIM, "pvc-u-1", PV) == {"hostPath": PV["spec"]["hostPath"]}
    provisioned = {**PV, "metadata": {"name": "pvc-u-1",
                                      "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}}}
    assert claim_source("default", CLAIM, "pvc-u-1", provisioned) == {"hostPath": PV["spec"]["hostPath"],
                                                                      "createMode": 0o777}
    local = {"spec": {"local": {"path": "/mnt/disk"}, "claimRef": {"name": "data", "namespace": "default"}}}
    assert claim_source("default", CLAIM, "pv-local", local) == {"local": {"path": "/mnt/disk"}}
    with pytest.raises(VolumeError, match='failed to fetch PV "pvc-u-1"'):
        claim_source("default", CLAIM, "pvc-u-1", None)
    stolen = {"spec": {**PV["spec"], "claimRef": {"name": "other", "namespace": "default"}}}
    with pytest.raises(VolumeError, match="claimRef"):
        claim_source("default", CLAIM, "pvc-u-1", stolen)
    with pytest.raises(VolumeError, match="only hostPath and local"):
        claim_source("default", CLAIM, "nfs-pv", {"spec": {"nfs": {"server": "x", "path": "/"}}})
    error = unmounted_volumes_error({"v": "error processing PVC default/data: PVC is not bound"})
    assert str(error) == ("unmounted volumes=[v], unattached volumes=[], failed to process volumes=[v]: "
                          "error processing PVC default/data: PVC is not bound")


def test_claim_volumes_are_prepared_from_their_source(tmp_path: Path) -> None:
    created = tmp_path / "storage" / "pvc-1"
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
                                {"name": "l", "persistentVolumeClaim": {"claimName": "disk"}}]}}
    volumes = PodVolumes(tmp_path / "pod")
    sources = {"v": {"hostPath": {"path": str(created), "type": "DirectoryOrCreate"}, "createMode": 0o777},
               "l": {"local": {"path": str(tmp_path)}}}
    paths = volumes.prepare(pod, pod_ip="", config_maps={}, secrets={}, claim_sources=sources)
    assert paths == {"v": str(created), "l": str(tmp_path)} and created.is_dir()
    assert created.stat().st_mode & 0o777 == 0o777
    created.chmod(0o700)  # the directory's owner changed it: never again made world-writable
    volumes.prepare(pod, pod_ip="", config_maps={}, secrets={}, claim_sources=sources)
    assert created.stat().st_mode & 0o777 == 0o700
    with pytest.raises(VolumeError, match="does not exist"):
        volumes.prepare(pod, pod_ip="", config_maps={}, secrets={},
                        claim_sources={**sources, "l": {"local": {"path": str(tmp_path / "absent")}}})
    with pytest.raises(VolumeError, match="not bound"):
        volumes.prepare(pod, pod_ip="", config_maps={}, secrets={}, claim_sources={})


def test_sub_paths_are_checked_and_expanded() -> None:
    assert sub_path_of({"name": "v", "subPath": "a/b"}, {}) == "a/b"
    assert sub_path_of({"name": "v"}, {}) == ""
    assert sub_path_of({"name": "v", "subPathExpr": "logs/$(POD)"}, {"POD": "web-1"}) == "logs/web-1"
    assert sub_path_of({"name": "v", "subPathExpr": "$$(POD)"}, {}) == "$(POD)"
    with pytest.raises(VolumeError, match=r"^error SubPath `/etc` must not be an absolute path$"):
        sub_path_of({"name": "v", "subPath": "/etc"}, {})
    with pytest.raises(VolumeError, match=r"^unable to provision SubPath `a/../../x`: must not contain '\.\.'$"):
        sub_path_of({"name": "v", "subPath": "a/../../x"}, {})
    with pytest.raises(VolumeError, match="must not contain"):
        sub_path_of({"name": "v", "subPathExpr": "$(UP)/x"}, {"UP": ".."})
    with pytest.raises(VolumeError, match=r"^missing value for NOPE$"):
        sub_path_of({"name": "v", "subPathExpr": "$(NOPE)"}, {})
    with pytest.raises(VolumeError, match="mutually exclusive"):
        sub_path_of({"name": "v", "subPath": "a", "subPathExpr": "b"}, {})
    pod = {"metadata": {"name": "web-1", "namespace": "prod"}}
    container = {"env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "DIR", "value": "$(POD)-logs"},
                         {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}
    assert subpath_env(pod, container) == {"POD": "web-1", "DIR": "web-1-logs"}


def test_container_mounts_resolve_sub_paths_inside_the_volume(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    (volume / "cfg").mkdir(parents=True)
    (volume / "cfg" / "file").write_text("x")
    os.symlink("/etc", volume / "escape")
    pod = {"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "v", "emptyDir": {}},
                                                            {"name": "c", "persistentVolumeClaim": {"claimName": "d",
                                                                                                    "readOnly": True}}]}}
    volumes = PodVolumes(tmp_path / "pod")
    paths = {"v": str(volume), "c": str(tmp_path / "claim")}
    container = {"name": "main", "volumeMounts": [
        {"name": "v", "mountPath": "/f", "subPath": "cfg/file"},
        {"name": "v", "mountPath": "/new", "subPath": "made/here", "readOnly": True},
        {"name": "c", "mountPath": "/claim"},
    ]}
    planned = plan_mounts(pod, container, paths, None, pod_dir=volumes.pod_dir)
    assert {m.destination: m.source for m in planned if m.exact_source} == {
        "/f": str(volume / "cfg" / "file"), "/new": str(volume / "made" / "here")}  # pure: nothing made yet
    assert not (volume / "made").exists()
    mounts = {m.destination: m for m in volumes.realize_mounts(planned, container, paths)}
    assert mounts["/f"].source == str(volume / "cfg" / "file") and not mounts["/f"].readonly
    assert mounts["/new"].source == str(volume / "made" / "here") and mounts["/new"].readonly
    assert (volume / "made" / "here").is_dir()
    assert mounts["/claim"].readonly  # persistentVolumeClaim.readOnly covers every mount of it
    escaping = {"name": "m", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "escape"}]}
    with pytest.raises(VolumeError, match="not within volume path"):
        volumes.realize_mounts(plan_mounts(pod, escaping, paths, None, pod_dir=volumes.pod_dir), escaping, paths)


def test_memory_volume_sizes() -> None:
    allocatable = {"memory": "2Gi"}
    volume = {"name": "m", "emptyDir": {"medium": "Memory"}}
    pod = {"spec": {"containers": [{"name": "a"}]}}
    assert memory_volume_size(pod, volume, allocatable) == 2 << 30
    assert memory_volume_size(pod, {"emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}, allocatable) == 64 << 20
    limited = {"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "32Mi"}}},
                                       {"name": "b", "resources": {"limits": {"memory": "16Mi"}}}]}}
    assert memory_volume_size(limited, volume, allocatable) == 48 << 20
    assert memory_volume_size(limited, {"emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}, allocatable) == 48 << 20
    assert memory_volume_size(pod, volume, {}) == 0
    with pytest.raises(VolumeError, match="invalid size"):
        memory_volume_size(pod, {"emptyDir": {"medium": "Memory", "sizeLimit": "lots"}}, allocatable)


def test_size_limit_measures_disk_usage(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"volumes": [{"name": "small", "emptyDir": {"sizeLimit": "64Ki"}},
                                {"name": "free", "emptyDir": {}}]}}
    volumes = PodVolumes(tmp_path / "pod")
    volumes.prepare(pod, pod_ip="", config_maps={}, secrets={})
    assert volumes.size_limit_exceeded(pod) is None
    (volumes.volumes_dir / "free" / "big").write_bytes(os.urandom(256 << 10))
    assert volumes.size_limit_exceeded(pod) is None  # no limit on that one
    data = os.urandom(128 << 10)
    (volumes.volumes_dir / "small" / "blob").write_bytes(data)
    os.link(volumes.volumes_dir / "small" / "blob", volumes.volumes_dir / "small" / "again")
    assert (128 << 10) <= disk_usage(volumes.volumes_dir / "small") < (200 << 10)  # a hard link counts once
    assert volumes.size_limit_exceeded(pod) == 'Usage of EmptyDir volume "small" exceeds the limit "64Ki".'


def test_untyped_host_path_is_created_as_a_directory(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"volumes": [{"name": "h", "hostPath": {"path": str(tmp_path / "made" / "dir")}},
                                {"name": "f", "hostPath": {"path": str(tmp_path / "absent"), "type": "File"}}]}}
    volumes = PodVolumes(tmp_path / "pod")
    with pytest.raises(VolumeError, match="does not exist"):
        volumes.prepare(pod, pod_ip="", config_maps={}, secrets={})
    pod["spec"]["volumes"].pop()
    assert volumes.prepare(pod, pod_ip="", config_maps={}, secrets={}) == {"h": str(tmp_path / "made" / "dir")}
    assert (tmp_path / "made" / "dir").is_dir()


def test_failed_mount_events_name_the_volume_as_upstream(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"volumes": [{"name": "settings", "configMap": {"name": "x"}},
                                {"name": "scratch", "emptyDir": {}},
                                {"name": "token", "secret": {"secretName": "y"}}]}}
    volumes = PodVolumes(tmp_path / "pod")
    with pytest.raises(VolumeSetUpErrors) as raised:
        volumes.prepare(pod, pod_ip="", config_maps={"x": None}, secrets={"y": None})
    messages = sorted(failed_mount_message(e) for e in raised.value.failures.values())
    assert messages == ['MountVolume.SetUp failed for volume "settings" : configmap "x" not found',
                        'MountVolume.SetUp failed for volume "token" : secret "y" not found']
    assert (volumes.volumes_dir / "scratch").is_dir()  # the others are set up meanwhile
    pod["spec"]["volumes"].pop()
    with pytest.raises(VolumeError) as single:
        volumes.prepare(pod, pod_ip="", config_maps={"x": None}, secrets={})
    assert single.value.volume == "settings"
    assert failed_mount_message(mount_timeout_error({"settings", "a"})) == (
        "Unable to attach or mount volumes: unmounted volumes=[a settings], unattached volumes=[], "
        "failed to process volumes=[]: timed out waiting for the condition")
    claim_error = unmounted_volumes_error({"data": "error processing PVC default/d: PVC is not bound"})
    assert failed_mount_message(claim_error) == (
        "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[], "
        "failed to process volumes=[data]: error processing PVC default/d: PVC is not bound")


def test_mount_wait_times_out_after_two_minutes_three_seconds() -> None:
    wait = MountWait()
    assert wait.timeout == 123.0
    assert wait.failed(["settings"], now=1000.0) is None
    assert wait.failed(["token"], now=1122.9) is None
    error = wait.failed(["settings"], now=1123.0)
    assert error is not None and failed_mount_message(error) == (
        "Unable to attach or mount volumes: unmounted volumes=[settings token], unattached volumes=[], "
        "failed to process volumes=[]: timed out waiting for the condition")
    assert wait.failed(["settings"], now=1124.0) is None  # a new wait began at the timeout
    assert failed_mount_message(wait.failed(["settings"], now=1246.0) or VolumeError("")).endswith(
        "unmounted volumes=[settings], unattached volumes=[], failed to process volumes=[]: "
        "timed out waiting for the condition")
    wait.failed(["x"], now=2000.0)
    wait.mounted()  # mounted at last: the next failure starts a fresh wait
    assert wait.failed(["x"], now=2200.0) is None
