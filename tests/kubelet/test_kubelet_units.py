"""Pure kubelet rules: env and $(VAR) expansion, QoS, cgroup resources, back-off, status, volumes."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.agent.kubelet.images import image_ref
from k3py.agent.kubelet.node import build_conditions, claim_pod_cidr
from k3py.agent.kubelet.podspec import (
    ContainerConfigError,
    command_and_args,
    container_env,
    crash_loop_backoff,
    expand,
    qos_class,
    runtime_resources,
)
from k3py.agent.kubelet.status import ContainerView, pod_phase, pod_status
from k3py.agent.kubelet.streaming import render_log_lines
from k3py.agent.kubelet.volumes import (
    VolumeError,
    publish_files,
    render_resolv_conf,
    render_volume_files,
)
from k3py.runtime.images import Image
from k3py.runtime.spec import ContainerStatus

POD = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "default", "containers": [
        {"name": "main", "image": "busybox", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}]},
    "status": {"podIP": "10.42.0.7", "hostIP": "192.0.2.1"},
}


def test_expand_follows_kubelet_rules() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", env) == "x-y"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(MISSING) $A", env) == "$(MISSING) $A"


def test_container_env_order_sources_and_expansion() -> None:
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "GREETING", "value": "hello $(CM_who)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}}},
        ],
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        "command": ["echo", "$(GREETING)"],
        "args": ["$(POD)", "$$(POD)"],
    }
    env = container_env(
        POD, container,
        config_maps={"cm": {"data": {"who": "world"}}, "gone": None},
        secrets={"s": {"data": {"token": base64.b64encode(b"t0k").decode()}}},
        service_env={"KUBERNETES_SERVICE_HOST": "10.43.0.1"},
    )
    assert next(iter(env)) == "KUBERNETES_SERVICE_HOST"
    assert env["CM_who"] == "world" and env["token"] == "t0k"
    assert env["GREETING"] == "hello world"
    assert (env["POD"], env["APP"], env["IP"]) == ("web", "web", "10.42.0.7")
    assert (env["MEM"], env["CPU"]) == ("64", "1")  # CPU rounds up to whole cores
    assert env["KEY"] == "t0k" and "OPT" not in env
    assert command_and_args(container, env) == (["echo", "hello world"], ["web", "$(POD)"])


def test_service_link_variables() -> None:
    from k3py.agent.kubelet.podspec import pod_service_env

    services = [
        {"metadata": {"name": "my-db", "namespace": "shop"},
         "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}},
        {"metadata": {"name": "headless", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
        {"metadata": {"name": "other", "namespace": "elsewhere"}, "spec": {"clusterIP": "10.43.0.30",
                                                                           "ports": [{"port": 80}]}},
        {"metadata": {"name": "kubernetes", "namespace": "default"},
         "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
    ]
    env = pod_service_env(POD, services)
    assert env["MY_DB_SERVICE_HOST"] == "10.43.0.20" and env["MY_DB_SERVICE_PORT"] == "5432"
    assert env["MY_DB_SERVICE_PORT_SQL"] == "5432" and env["MY_DB_PORT"] == "tcp://10.43.0.20:5432"
    assert env["MY_DB_PORT_5432_TCP_ADDR"] == "10.43.0.20" and env["MY_DB_PORT_5432_TCP_PROTO"] == "tcp"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1" and env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert not any(k.startswith(("HEADLESS_", "OTHER_")) for k in env)
    no_links = {**POD, "spec": {**POD["spec"], "enableServiceLinks": False}}
    assert set(pod_service_env(no_links, services)) == {k for k in env if k.startswith("KUBERNETES_")}


def test_missing_required_config_is_a_config_error() -> None:
    container = {"name": "m", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}
    with pytest.raises(ContainerConfigError, match='configmap "cm" not found'):
        container_env(POD, container, config_maps={"cm": None}, secrets={})
    with pytest.raises(ContainerConfigError, match="couldn't find key k"):
        container_env(POD, container, config_maps={"cm": {"data": {}}}, secrets={})


def test_backoff_qos_and_resources() -> None:
    assert [crash_loop_backoff(n) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]
    assert crash_loop_backoff(50) == 300
    assert qos_class(POD) == "Guaranteed"
    assert qos_class({"spec": {"containers": [{"name": "a"}]}}) == "BestEffort"
    assert qos_class({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}}) == "Burstable"
    resources = runtime_resources(POD["spec"]["containers"][0])
    assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (512, 50_000, 64 << 20)
    assert runtime_resources({"name": "x"}).cpu_shares == 2


def _exited(code: int, attempt: int = 0) -> ContainerStatus:
    return ContainerStatus(id=f"c{attempt}", name="main", image="busybox", image_id="sha256:1", state="exited",
                           exit_code=code, created_at=1, started_at=2, finished_at=3)


def test_phase_rules() -> None:
    def pod(policy: str) -> dict:
        return {"spec": {"restartPolicy": policy}}

    done = ContainerView("main", "busybox", current=_exited(0))
    failed = ContainerView("main", "busybox", current=_exited(1))
    waiting = ContainerView("main", "busybox")
    assert pod_phase(pod("Never"), [], [done], False) == "Succeeded"
    assert pod_phase(pod("OnFailure"), [], [done], False) == "Succeeded"
    assert pod_phase(pod("Always"), [], [done], False) == "Running"
    assert pod_phase(pod("Never"), [], [failed], False) == "Failed"
    assert pod_phase(pod("Never"), [], [waiting], False) == "Pending"
    assert pod_phase(pod("Always"), [waiting], [waiting], False) == "Pending"
    assert pod_phase(pod("Never"), [ContainerView("init", "b", current=_exited(1))], [waiting], True) == "Failed"


def test_status_of_crash_looping_container() -> None:
    view = ContainerView("main", "busybox", current=_exited(3, 2), restart_count=2,
                         waiting_reason="CrashLoopBackOff", waiting_message="back-off 20s")
    status = pod_status({"spec": {"restartPolicy": "Always"}, "status": {}}, init_views=[], views=[view],
                        pod_ip="10.42.0.9", host_ip="192.0.2.1", start_time="2024-01-01T00:00:00Z",
                        sandbox_ready=True)
    (container,) = status["containerStatuses"]
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}
    assert container["lastState"]["terminated"]["exitCode"] == 3
    assert container["lastState"]["terminated"]["reason"] == "Error"
    assert container["restartCount"] == 2
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["message"] == "containers with unready status: [main]"
    assert status["phase"] == "Running" and status["podIPs"] == [{"ip": "10.42.0.9"}]


def test_volume_rendering_items_modes_and_errors() -> None:
    cm = {"data": {"a": "1", "b": "2"}}
    files = render_volume_files(POD, {"name": "v", "configMap": {"name": "cm", "items": [
        {"key": "a", "path": "sub/a.txt", "mode": 0o600}], "defaultMode": 0o640}}, config_maps={"cm": cm}, secrets={})
    assert files == {"sub/a.txt": (b"1", 0o600)}
    secret = {"data": {"pw": base64.b64encode(b"s3cret").decode()}}
    files = render_volume_files(POD, {"name": "v", "projected": {"sources": [
        {"secret": {"name": "s"}},
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    ]}}, config_maps={}, secrets={"s": secret})
    assert files == {"pw": (b"s3cret", 0o644), "name": (b"web", 0o644)}
    with pytest.raises(VolumeError, match='configmap "x" not found'):
        render_volume_files(POD, {"name": "v", "configMap": {"name": "x"}}, config_maps={"x": None}, secrets={})
    assert render_volume_files(POD, {"name": "v", "configMap": {"name": "x", "optional": True}},
                               config_maps={"x": None}, secrets={}) == {}


def test_publish_files_swaps_atomically(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert publish_files(target, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    assert (target / "a").read_bytes() == b"1" and (target / "d" / "b").read_bytes() == b"2"
    assert os.readlink(target / "a") == "..data/a"
    assert not publish_files(target, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    assert publish_files(target, {"a": (b"new", 0o644)})
    assert (target / "a").read_bytes() == b"new" and not (target / "d").exists()
    assert len([e for e in os.listdir(target) if e.startswith("..") and e != "..data"]) == 1


def test_hosts_file_names() -> None:
    from k3py.agent.kubelet.volumes import render_hosts

    text = render_hosts("10.42.0.9", "web-0", [{"ip": "192.0.2.7", "hostnames": ["db", "db.local"]}],
                        "web-0.web.shop.svc.cluster.local")
    assert "10.42.0.9\tweb-0.web.shop.svc.cluster.local\tweb-0\n" in text
    assert text.endswith("192.0.2.7\tdb db.local\n") and "127.0.0.1\tlocalhost\n" in text


def test_fs_group_owns_volumes(tmp_path: Path) -> None:
    from k3py.agent.kubelet.volumes import PodVolumes

    pod = {**POD, "spec": {**POD["spec"], "securityContext": {"fsGroup": 2000}, "volumes": [
        {"name": "scratch", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 0o400}},
    ]}}
    paths = PodVolumes(tmp_path / "pod").prepare(pod, pod_ip="10.42.0.7", config_maps={"cm": {"data": {"k": "v"}}},
                                                secrets={})
    scratch = os.stat(paths["scratch"])
    assert scratch.st_gid == 2000 and scratch.st_mode & 0o2000
    key = os.stat(os.path.join(paths["cfg"], "k"))
    assert key.st_gid == 2000 and key.st_mode & 0o777 == 0o440


def test_resolv_conf_cluster_first() -> None:
    text = render_resolv_conf(POD)
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local" in text
    assert "nameserver 10.43.0.10" in text and "options ndots:5" in text
    host = render_resolv_conf({"spec": {"dnsPolicy": "Default"}}, "nameserver 192.0.2.53\n")
    assert host == "nameserver 192.0.2.53\n"


def test_node_helpers() -> None:
    nodes = [{"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}},
             {"metadata": {"name": "b"}, "spec": {}}]
    assert claim_pod_cidr(nodes, "b") == "10.42.1.0/24"
    assert claim_pod_cidr(nodes, "a") == "10.42.0.0/24"
    first = build_conditions({"MemoryPressure": False, "DiskPressure": True, "PIDPressure": False}, True, "", [])
    by_type = {c["type"]: c for c in first}
    assert by_type["DiskPressure"]["status"] == "True" and by_type["Ready"]["reason"] == "KubeletReady"
    old = [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first]
    again = build_conditions({"MemoryPressure": False, "DiskPressure": True, "PIDPressure": False}, False, "down", old)
    again_by_type = {c["type"]: c for c in again}
    assert again_by_type["DiskPressure"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert again_by_type["Ready"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_cri_log_rendering_joins_partials() -> None:
    raw = (b"2024-01-01T00:00:00.000000001Z stdout P hel\n"
           b"2024-01-01T00:00:00.100000000Z stdout F lo\n"
           b"2024-01-01T00:00:01.000000000Z stderr F oops\n"
           b"2024-01-01T00:00:02.000000000Z stdout F unfinished")
    lines = [text for _t, text in render_log_lines(raw, False)]
    assert lines == [b"hello\n", b"oops\n"]  # a record still being written is not read
    no_newline = b"2024-01-01T00:00:03.0Z stdout F done\n2024-01-01T00:00:04.0Z stdout P prompt> \n"
    assert [text for _t, text in render_log_lines(no_newline, False)] == [b"done\n", b"prompt> "]
    stamped = [text for _t, text in render_log_lines(raw, True)]
    assert stamped[0] == b"2024-01-01T00:00:00.000000001Z hello\n"


def test_pull_secret_credentials_match_the_registry() -> None:
    from k3py.agent.kubelet.pullsecrets import credentials_for

    def secret(key: str, payload: dict) -> dict:
        return {"data": {key: base64.b64encode(json.dumps(payload).encode()).decode()}}

    hub = secret(".dockerconfigjson", {"auths": {"https://index.docker.io/v1/": {
        "auth": base64.b64encode(b"hubuser:hubpass").decode()}}})
    private = secret(".dockerconfigjson", {"auths": {"registry.example:5000": {
        "username": "me", "password": "pw"}}})
    legacy = secret(".dockercfg", {"legacy.example": {"auth": base64.b64encode(b"old:secret").decode()}})
    found = credentials_for("busybox", [None, private, hub])
    assert (found.username, found.password) == ("hubuser", "hubpass")
    found = credentials_for("registry.example:5000/team/app:v1", [hub, private])
    assert (found.username, found.password) == ("me", "pw")
    found = credentials_for("legacy.example/app", [legacy])
    assert (found.username, found.password) == ("old", "secret")
    assert credentials_for("elsewhere.example/app", [hub, private, legacy]) is None
    assert credentials_for("busybox", [{"data": {".dockerconfigjson": "not base64!"}}]) is None


async def test_logs_span_rotated_files(tmp_path: Path) -> None:
    import asyncio as aio

    from k3py.agent.kubelet.streaming import KubeletStreamingBackend
    from k3py.agent.streaming.backend import LogOptions, PodRef

    log = tmp_path / "container.log"
    (tmp_path / "container.log.2").write_bytes(b"2024-01-01T00:00:01.0Z stdout F one\n")
    (tmp_path / "container.log.1").write_bytes(b"2024-01-01T00:00:02.0Z stdout F two\n")
    log.write_bytes(b"2024-01-01T00:00:03.0Z stdout F three\n")
    status = ContainerStatus(id="c1", name="main", image="busybox", image_id="sha256:1", state="exited",
                             exit_code=0, log_path=str(log), labels={})

    class Node:  # the lookups the backend makes of the kubelet, over real files
        runtime = None

        def find_pod(self, namespace: str, name: str) -> dict:
            return {"metadata": {"uid": "u", "name": name}, "spec": {"containers": [{"name": "main"}]}}

        async def run_blocking(self, fn, *args):  # type: ignore[no-untyped-def]
            return await aio.to_thread(fn, *args)

        def container_attempts(self, uid: str, name: str) -> list[ContainerStatus]:
            return [status]

    class Out:
        def __init__(self) -> None:
            self.data = b""

        async def write(self, data: bytes) -> None:
            self.data += data

    node = Node()
    backend = KubeletStreamingBackend(node, node)  # type: ignore[arg-type]
    out = Out()
    await backend.logs(PodRef("default", "p"), "main", LogOptions(), out)
    assert out.data == b"one\ntwo\nthree\n"
    out = Out()
    await backend.logs(PodRef("default", "p"), "main", LogOptions(tail_lines=2), out)
    assert out.data == b"two\nthree\n"


def test_expand_edge_cases_read_as_the_kubelet_reads_them() -> None:
    env = {"A": "x", "1A": "digit", "": "never"}
    assert expand("$$$(A)", env) == "$x"  # an escaped $, then a reference
    assert expand("$$$$", env) == "$$"
    assert expand("$(A", env) == "$(A"  # no closing paren: as written
    assert expand("$()", env) == "never"  # upstream looks the empty name up too
    assert expand("$(1A) $(A)$(A)", env) == "digit xx"  # any name up to ")" is looked up
    assert expand("cost: $5 $A", env) == "cost: $5 $A"


def test_secret_and_configmap_key_refs_optional_or_not_word_errors_as_the_kubelet() -> None:
    def env_of(var: dict, secrets: dict | None = None, config_maps: dict | None = None) -> dict[str, str]:
        return container_env(POD, {"name": "m", "env": [var]}, config_maps=config_maps or {}, secrets=secrets or {})

    secret = {"data": {"token": base64.b64encode(b"t").decode()}}
    ref = {"name": "creds", "key": "nope"}
    with pytest.raises(ContainerConfigError) as missing_key:
        env_of({"name": "X", "valueFrom": {"secretKeyRef": ref}}, secrets={"creds": secret})
    assert str(missing_key.value) == "couldn't find key nope in Secret shop/creds"
    with pytest.raises(ContainerConfigError) as missing_secret:
        env_of({"name": "X", "valueFrom": {"secretKeyRef": ref}}, secrets={"creds": None})
    assert str(missing_secret.value) == 'secret "creds" not found'
    with pytest.raises(ContainerConfigError) as missing_cm_key:
        env_of({"name": "X", "valueFrom": {"configMapKeyRef": ref}}, config_maps={"creds": {"data": {}}})
    assert str(missing_cm_key.value) == "couldn't find key nope in ConfigMap shop/creds"
    optional = {**ref, "optional": True}
    assert "X" not in env_of({"name": "X", "valueFrom": {"secretKeyRef": optional}}, secrets={"creds": secret})
    assert "X" not in env_of({"name": "X", "valueFrom": {"secretKeyRef": optional}}, secrets={"creds": None})
    found = env_of({"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                   secrets={"creds": secret})
    assert found["X"] == "t"
    # envFrom: a missing optional source adds nothing, a required one is an error; prefixes apply.
    container = {"name": "m", "envFrom": [{"secretRef": {"name": "gone", "optional": True}},
                                          {"configMapRef": {"name": "cm"}, "prefix": "CFG_"}]}
    assert container_env(POD, container, config_maps={"cm": {"data": {"k": "v"}}}, secrets={"gone": None}) == {
        "CFG_k": "v"}
    with pytest.raises(ContainerConfigError, match='configmap "cm" not found'):
        container_env(POD, container, config_maps={"cm": None}, secrets={"gone": None})


def test_resource_field_refs_default_to_limits_and_node_allocatable() -> None:
    container = {"name": "m", "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "128Mi"}},
                 "env": [
                     {"name": "CPU_REQ_MILLI", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu",
                                                                                  "divisor": "1m"}}},
                     {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                     {"name": "MEM_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
                     {"name": "MEM_LIMIT_KI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                                 "divisor": "1Ki"}}},
                     {"name": "OTHER", "valueFrom": {"resourceFieldRef": {"containerName": "m",
                                                                          "resource": "limits.ephemeral-storage"}}},
                 ]}
    pod = {**POD, "spec": {**POD["spec"], "containers": [container]}}
    env = container_env(pod, container, config_maps={}, secrets={},
                        node_allocatable={"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1000"})
    assert env["CPU_REQ_MILLI"] == "250"
    assert env["CPU_LIMIT"] == "2"  # no limit: the node's allocatable
    assert env["MEM_REQ"] == str(128 << 20)  # no request: the limit
    assert env["MEM_LIMIT_KI"] == "131072"
    assert env["OTHER"] == "1000"
    bad = {"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}}
    with pytest.raises(ContainerConfigError, match="divisor"):
        container_env(pod, {**container, "env": [bad]}, config_maps={}, secrets={})


def test_crash_loop_back_off_doubles_and_resets_after_ten_minutes_of_running() -> None:
    from k3py.agent.kubelet.backoff import RestartBackOff

    now = [1_000_000.0]
    backoff = RestartBackOff(clock=lambda: now[0])
    key = ("uid-1", "main", False)
    # Short runs: immediate, then 10 s, 20 s ... counted from the exit.
    assert backoff.remaining(key, 0, now[0] - 2, now[0]) == 0.0
    assert backoff.remaining(key, 1, now[0] - 2, now[0]) == 10.0
    now[0] += 4
    assert backoff.remaining(key, 1, now[0] - 6, now[0] - 4) == 6.0
    assert backoff.remaining(key, 3, now[0] - 2, now[0]) == 40.0
    assert backoff.remaining(key, 9, now[0] - 2, now[0]) == 300.0
    # Ten minutes of running earn an immediate restart, and the back-off starts over at 10 s.
    assert backoff.remaining(key, 9, now[0] - 600, now[0]) == 0.0
    assert backoff.remaining(key, 10, now[0] - 1, now[0]) == 10.0
    assert backoff.remaining(key, 11, now[0] - 1, now[0]) == 20.0
    # Other containers keep their own state; a pod's removal forgets its containers.
    assert backoff.remaining(("uid-2", "main", False), 10, now[0] - 1, now[0]) == 300.0
    backoff.forget_pod("uid-1")
    assert backoff.remaining(key, 11, now[0] - 1, now[0]) == 300.0


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs with 64 inodes: a real filesystem to fill up, unmounted afterwards."""
    import subprocess

    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_disk_pressure_follows_the_nodefs_space_and_inode_thresholds(small_filesystem: Path) -> None:
    from k3py.agent.kubelet.node import disk_pressure, pressure_conditions

    assert disk_pressure(small_filesystem) is False
    filler = small_filesystem / "filler"
    filler.write_bytes(b"x" * (950 << 10))  # over 90% of the space used
    assert disk_pressure(small_filesystem) is True
    assert pressure_conditions(small_filesystem)["DiskPressure"] is True
    filler.unlink()
    assert disk_pressure(small_filesystem) is False
    for i in range(62):  # the inodes run out while the space does not
        (small_filesystem / f"f{i}").touch()
    assert disk_pressure(small_filesystem) is True


def test_pod_cgroups_follow_the_qos_class_and_effective_resources() -> None:
    from k3py.agent.kubelet.podspec import oom_score_adj, pod_cgroup_path, pod_cgroup_resources

    def pod(containers: list[dict], inits: list[dict] | None = None) -> dict:
        return {"metadata": {"uid": "u-9"}, "spec": {"containers": containers, "initContainers": inits or []}}

    guaranteed = pod([{"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                      {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}])
    assert pod_cgroup_path(guaranteed) == "kubepods/podu-9"
    resources = pod_cgroup_resources(guaranteed)
    assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (768, 75_000, 96 << 20)
    # An init container bigger than the sum of the others sets the pod's size (they run first).
    with_init = pod([{"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
                    [{"name": "i", "resources": {"limits": {"cpu": "2", "memory": "16Mi"}}}])
    resources = pod_cgroup_resources(with_init)
    assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (2048, 200_000, 64 << 20)
    # One container without a memory limit: the pod has none either; requests still weigh CPU.
    burstable = pod([{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                     {"name": "b", "resources": {"limits": {"memory": "32Mi"}}}])
    assert pod_cgroup_path(burstable) == "kubepods/burstable/podu-9"
    resources = pod_cgroup_resources(burstable)
    assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (102, 0, 0)
    best_effort = pod([{"name": "a"}])
    assert pod_cgroup_path(best_effort) == "kubepods/besteffort/podu-9"
    assert pod_cgroup_resources(best_effort).cpu_shares == 2
    capacity = 4 << 30
    assert oom_score_adj(guaranteed, guaranteed["spec"]["containers"][0], capacity) == -997
    assert oom_score_adj(best_effort, best_effort["spec"]["containers"][0], capacity) == 1000
    assert oom_score_adj(burstable, burstable["spec"]["containers"][0], capacity) == 750  # 1Gi of 4Gi
    assert oom_score_adj(burstable, burstable["spec"]["containers"][1], capacity) == 993  # 32Mi
    huge = {"name": "h", "resources": {"requests": {"memory": "8Gi"}}}
    assert oom_score_adj(pod([huge, {"name": "x"}]), huge, capacity) == 3  # never below Guaranteed's
    from k3py.agent.kubelet.podspec import qos_group_resources

    # The Burstable group weighs its running pods' CPU requests together; BestEffort the minimum.
    done = {**burstable, "status": {"phase": "Succeeded"}}
    assert qos_group_resources("Burstable", [burstable, with_init, best_effort, done]).cpu_shares == 102
    assert qos_group_resources("Burstable", []).cpu_shares == 2
    assert qos_group_resources("BestEffort", [burstable]).cpu_shares == 2
    assert qos_group_resources("Guaranteed").cpu_shares == 0  # left as the kernel has it
    tiny = {"name": "t", "resources": {"requests": {"memory": "1"}}}
    assert oom_score_adj(pod([tiny]), tiny, capacity) == 999  # never as low a priority as BestEffort


def test_image_id_is_the_repo_digest_containerd_reports() -> None:
    manifest, config = "sha256:" + "a" * 64, "sha256:" + "c" * 64
    named = Image(manifest_digest=manifest, config_digest=config, layers=[], diff_ids=[], config={},
                  names=["registry.local:5000/team/app:v2", "docker.io/library/busybox:latest"])
    assert image_ref(config, "busybox", [named]) == f"docker.io/library/busybox@{manifest}"
    assert image_ref(config, "registry.local:5000/team/app:v1", [named]) == f"registry.local:5000/team/app@{manifest}"
    assert image_ref(config, "other:1", [named]) == f"docker.io/library/busybox@{manifest}"  # first name, sorted
    unnamed = Image(manifest_digest=manifest, config_digest=config, layers=[], diff_ids=[], config={}, names=[])
    assert image_ref(config, "busybox", [unnamed]) == config  # no repository known: the image ID
    assert image_ref(config, "busybox", []) == config
