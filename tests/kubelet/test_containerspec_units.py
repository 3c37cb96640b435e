"""The pure pod → runtime spec translation (containerspec): pod JSON in, ContainerSpec out."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from k3py.agent.kubelet.containerspec import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER,
    LABEL_INIT,
    LABEL_NAME,
    LABEL_NAMESPACE,
    LABEL_UID,
    ContainerInputs,
    NodeFacts,
    container_spec,
    needs_image_user,
    non_root_problem,
    sandbox_spec,
    sandbox_uid,
)
from k3py.agent.kubelet.podspec import ContainerConfigError
from k3py.agent.kubelet.volumes import VolumeError
from k3py.runtime.spec import Mount, SecurityProfile

Obj = dict[str, Any]

POD_DIR = Path("/var/lib/k3py/agent/pods/u-1")
SECCOMP_ROOT = "/var/lib/k3py/agent/seccomp"
NODE = NodeFacts(node_ip="192.0.2.10", allocatable={"cpu": "4", "memory": "4Gi"}, seccomp_root=SECCOMP_ROOT,
                 service_env={"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"})


def make_pod(*containers: Obj, inits: list[Obj] | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "serviceAccountName": "default", "containers": list(containers),
                 "initContainers": inits or [], **spec},
        "status": {"phase": "Pending"},
    }


def inputs(**overrides: Any) -> ContainerInputs:
    return ContainerInputs(**{"pod_dir": POD_DIR, "pod_ip": "10.42.0.7", "sandbox_id": "sb-1", **overrides})


def spec_of(pod: Obj, name: str = "main", node: NodeFacts = NODE, **overrides: Any):  # type: ignore[no-untyped-def]
    init = overrides.get("init", False)
    containers = pod["spec"]["initContainers" if init else "containers"]
    container = next(c for c in containers if c["name"] == name)
    return container_spec(pod, container, node, inputs(**overrides))


def test_a_plain_container_gets_its_image_command_labels_and_the_pod_sandbox() -> None:
    pod = make_pod({"name": "main", "image": "busybox", "command": ["sleep"], "args": ["3600"],
                    "workingDir": "/srv", "stdin": True, "tty": True})
    spec = spec_of(pod, attempt=3)
    assert (spec.name, spec.image, spec.command, spec.args) == ("main", "busybox", ["sleep"], ["3600"])
    assert (spec.working_dir, spec.stdin, spec.tty) == ("/srv", True, True)
    assert spec.sandbox_id == "sb-1"  # every container joins the pod's sandbox
    assert spec.labels == {LABEL_UID: "u-1", LABEL_NAMESPACE: "shop", LABEL_NAME: "web",
                           LABEL_CONTAINER: "main", LABEL_ATTEMPT: "3", LABEL_INIT: "false"}
    # Nothing set: the image's user, no extra groups or capabilities, unconfined, no host PID.
    assert (spec.user, spec.supplemental_groups, spec.capabilities_add, spec.capabilities_drop) == ("", [], [], [])
    assert (spec.privileged, spec.no_new_privs, spec.readonly_rootfs, spec.host_pid) == (False, False, False, False)
    assert spec.seccomp == SecurityProfile("Unconfined")
    # Without command/args the image's Entrypoint and Cmd stay.
    bare = spec_of(make_pod({"name": "main", "image": "busybox"}))
    assert (bare.command, bare.args) == (None, None)


def test_init_containers_are_labelled_as_such_and_numbered_by_attempt() -> None:
    pod = make_pod({"name": "main", "image": "busybox"},
                   inits=[{"name": "setup", "image": "busybox", "command": ["true"]}])
    spec = spec_of(pod, "setup", init=True, attempt=1)
    assert spec.labels[LABEL_INIT] == "true" and spec.labels[LABEL_CONTAINER] == "setup"
    assert spec.labels[LABEL_ATTEMPT] == "1"
    # An init container's resources count in the pod's QoS class like any other.
    limited = make_pod({"name": "main", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                       inits=[{"name": "setup", "image": "busybox"}])
    assert spec_of(limited, "setup", init=True).cgroup_parent == "kubepods/burstable/podu-1"


def test_env_from_config_maps_secrets_and_the_downward_api() -> None:
    container = {
        "name": "main", "image": "busybox",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "URL", "value": "http://$(POD_IP):8080/$(CFG_level)"},
        ],
        "command": ["echo", "$(TOKEN)"],
    }
    spec = spec_of(make_pod(container),
                   config_maps={"settings": {"data": {"level": "debug"}}},
                   secrets={"creds": {"data": {"token": base64.b64encode(b"s3cret").decode()}}})
    env = spec.env
    # The kubernetes Service's variables come first, as the kubelet orders them.
    assert list(env)[:2] == ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
    assert env["CFG_level"] == "debug" and env["token"] == "s3cret"
    # status.podIP is the address of this start (not yet in the API's status); hostIP the node's.
    assert (env["POD_NAME"], env["POD_IP"], env["HOST_IP"], env["APP"]) == ("web", "10.42.0.7", "192.0.2.10", "web")
    assert env["MEM_LIMIT"] == "4096"  # no limit: the node's allocatable memory, in Mi
    assert (env["LEVEL"], env["TOKEN"]) == ("debug", "s3cret")
    assert env["URL"] == "http://10.42.0.7:8080/debug"
    assert spec.command == ["echo", "s3cret"]


def test_service_link_variables_follow_enable_service_links() -> None:
    services = [{"metadata": {"name": "db", "namespace": "shop"},
                 "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 5432, "protocol": "TCP"}]}},
                {"metadata": {"name": "db", "namespace": "elsewhere"},
                 "spec": {"clusterIP": "10.43.0.30", "ports": [{"port": 5432, "protocol": "TCP"}]}}]
    linked = spec_of(make_pod({"name": "main", "image": "busybox"}), services=services)
    assert linked.env["DB_SERVICE_HOST"] == "10.43.0.20"  # only the pod's namespace's Services
    unlinked = spec_of(make_pod({"name": "main", "image": "busybox"}, enableServiceLinks=False), services=services)
    assert "DB_SERVICE_HOST" not in unlinked.env and unlinked.env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"


def test_missing_config_is_a_create_container_config_error_unless_optional() -> None:
    container = {"name": "main", "image": "busybox",
                 "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}
    with pytest.raises(ContainerConfigError, match='secret "creds" not found'):
        spec_of(make_pod(container), secrets={"creds": None})
    optional = copy.deepcopy(container)
    optional["env"][0]["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "X" not in spec_of(make_pod(optional), secrets={"creds": None}).env
    # Only what the pod manager fetched (from the pod's own namespace) is ever read: a Secret of
    # that name elsewhere is not among the inputs, so the container does not start.
    with pytest.raises(ContainerConfigError, match='secret "creds" not found'):
        spec_of(make_pod(container), secrets={})


def test_security_context_of_the_container_wins_over_the_pod() -> None:
    pod_security = {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000,
                    "seccompProfile": {"type": "RuntimeDefault"}}
    inherits = make_pod({"name": "main", "image": "busybox"}, securityContext=pod_security)
    spec = spec_of(inherits)
    assert spec.user == "1000:3000"
    assert spec.supplemental_groups == [4000, 2000]  # the fsGroup joins the supplemental groups
    assert spec.seccomp == SecurityProfile("RuntimeDefault")
    overrides = make_pod({"name": "main", "image": "busybox", "securityContext": {
        "runAsUser": 1001, "runAsGroup": 0, "seccompProfile": {"type": "Unconfined"},
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True}}, securityContext=pod_security)
    spec = spec_of(overrides)
    assert spec.user == "1001:0"  # the container's group 0 is a value, not "unset"
    assert spec.seccomp == SecurityProfile("Unconfined")
    assert (spec.capabilities_add, spec.capabilities_drop) == (["NET_ADMIN"], ["ALL"])
    assert spec.no_new_privs and spec.readonly_rootfs and not spec.privileged
    assert spec.supplemental_groups == [4000, 2000]  # pod-level only
    only_user = spec_of(make_pod({"name": "main", "image": "busybox", "securityContext": {"runAsUser": 5}}))
    assert only_user.user == "5"


def test_run_as_non_root_refuses_root_and_unverifiable_users() -> None:
    def pod(container_security: Obj | None = None, pod_security: Obj | None = None) -> Obj:
        return make_pod({"name": "main", "image": "busybox", "securityContext": container_security or {}},
                        securityContext=pod_security or {})

    non_root = {"runAsNonRoot": True}
    # The pod asks for non-root; the container's runAsUser 0 breaks it.
    with pytest.raises(ContainerConfigError, match="container's runAsUser breaks non-root policy"):
        spec_of(pod({"runAsUser": 0}, non_root))
    assert spec_of(pod({"runAsUser": 1000}, non_root)).user == "1000"
    # Without a runAsUser the image's user decides: the pod manager looks it up only then.
    assert needs_image_user(pod(None, non_root), pod(None, non_root)["spec"]["containers"][0])
    assert not needs_image_user(pod({"runAsUser": 7}, non_root), pod({"runAsUser": 7})["spec"]["containers"][0])
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        spec_of(pod(None, non_root), image_user="")
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        spec_of(pod(None, non_root), image_user="root:root")
    with pytest.raises(ContainerConfigError, match=r"non-numeric user \(nobody\)"):
        spec_of(pod(None, non_root), image_user="nobody")
    assert spec_of(pod(None, non_root), image_user="65534:65534").user == ""
    # The container can lift the pod's requirement.
    assert spec_of(pod({"runAsNonRoot": False}, non_root), image_user="root").user == ""
    assert non_root_problem(None, None) == ""  # an image the store cannot read is not refused


def test_seccomp_profiles_and_privileged_containers() -> None:
    def profile(pod_profile: Obj | None, container_security: Obj, default: bool = False) -> SecurityProfile:
        pod = make_pod({"name": "main", "image": "busybox", "securityContext": container_security},
                       securityContext={"seccompProfile": pod_profile} if pod_profile else {})
        node = NodeFacts(node_ip=NODE.node_ip, seccomp_default=default, seccomp_root=SECCOMP_ROOT)
        return spec_of(pod, node=node).seccomp

    assert profile(None, {}) == SecurityProfile("Unconfined")
    assert profile(None, {}, default=True) == SecurityProfile("RuntimeDefault")  # --seccomp-default
    assert profile({"type": "Unconfined"}, {}, default=True) == SecurityProfile("Unconfined")
    assert profile(None, {"seccompProfile": {"type": "Localhost", "localhostProfile": "audit.json"}}) == \
        SecurityProfile("Localhost", f"{SECCOMP_ROOT}/audit.json")
    assert profile({"type": "RuntimeDefault"}, {"privileged": True}, default=True) == SecurityProfile("Unconfined")
    privileged = spec_of(make_pod({"name": "main", "image": "busybox", "securityContext": {"privileged": True}}))
    assert privileged.privileged
    # An attacker's profile path that leaves the kubelet's seccomp dir is refused, not read.
    for escape in ("../../../etc/shadow", "/etc/shadow"):
        with pytest.raises(ContainerConfigError, match="localhostProfile"):
            profile(None, {"seccompProfile": {"type": "Localhost", "localhostProfile": escape}})


def test_host_namespaces_pid_on_the_container_network_and_ipc_on_the_sandbox() -> None:
    pod = make_pod({"name": "main", "image": "busybox"}, hostPID=True, hostIPC=True, hostNetwork=True,
                   hostname="custom")
    assert spec_of(pod).host_pid
    sandbox = sandbox_spec(pod)
    assert (sandbox.host_network, sandbox.host_ipc, sandbox.hostname) == (True, True, "custom")
    assert sandbox_uid(sandbox.name) == "u-1" and sandbox.name == "shop_web_u-1"
    isolated = make_pod({"name": "main", "image": "busybox"})
    assert not spec_of(isolated).host_pid
    sandbox = sandbox_spec(isolated)
    assert (sandbox.host_network, sandbox.host_ipc, sandbox.hostname) == (False, False, "web")
    assert len(sandbox_spec({**isolated, "metadata": {**isolated["metadata"], "name": "n" * 80}}).hostname) == 63


@pytest.mark.parametrize(("containers", "qos", "parent", "oom"), [
    ([{"name": "main", "image": "busybox", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
     "Guaranteed", "kubepods/podu-1", -997),
    ([{"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}}],
     "Burstable", "kubepods/burstable/podu-1", 750),
    ([{"name": "main", "image": "busybox"}], "BestEffort", "kubepods/besteffort/podu-1", 1000),
])
def test_resources_become_the_containers_cgroup_by_qos_class(containers: list[Obj], qos: str, parent: str,
                                                              oom: int) -> None:
    spec = spec_of(make_pod(*containers))
    assert spec.cgroup_parent == parent
    assert spec.oom_score_adj == oom
    resources = spec.resources
    if qos == "Guaranteed":
        assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (512, 50_000, 64 << 20)
    elif qos == "Burstable":
        assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (256, 0, 0)
    else:
        assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit) == (2, 0, 0)


def test_burstable_oom_score_needs_the_nodes_memory() -> None:
    pod = make_pod({"name": "main", "image": "busybox", "resources": {"requests": {"memory": "1Gi"}}})
    unknown = NodeFacts(node_ip=NODE.node_ip, allocatable={})
    assert spec_of(pod, node=unknown).oom_score_adj == 1000  # unknown capacity: as BestEffort


def test_mounts_volume_mounts_etc_files_and_the_termination_log() -> None:
    pod = make_pod({"name": "main", "image": "busybox", "volumeMounts": [
        {"name": "data", "mountPath": "/data"},
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "data", "mountPath": "/logs", "subPathExpr": "$(POD_NAME)/logs", "readOnly": True},
        {"name": "hosts", "mountPath": "/etc/hosts"},
    ], "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "terminationMessagePath": "/tmp/last-words"},
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "app"}},
                 {"name": "hosts", "hostPath": {"path": "/srv/hosts"}}])
    paths = {"data": f"{POD_DIR}/volumes/data", "cfg": f"{POD_DIR}/volumes/cfg", "hosts": "/srv/hosts"}
    mounts = {m.destination: m for m in spec_of(pod, volume_paths=paths, attempt=2).mounts}
    assert mounts["/data"] == Mount(destination="/data", source=paths["data"])
    assert mounts["/etc/app"].readonly  # rendered volumes are read-only
    # A subPath is planned inside its volume; the pod manager then creates and resolves it.
    assert mounts["/logs"] == Mount(destination="/logs", source=f"{paths['data']}/web/logs", readonly=True,
                                    exact_source=True)
    assert mounts["/etc/hosts"].source == "/srv/hosts"  # the container's own mount wins
    assert mounts["/etc/hostname"].source == f"{POD_DIR}/etc/hostname"
    assert mounts["/etc/resolv.conf"].source == f"{POD_DIR}/etc/resolv.conf"
    assert mounts["/tmp/last-words"].source == f"{POD_DIR}/containers/main_2/termination-log"


def test_mounts_that_would_leave_their_volume_are_refused() -> None:
    def mounting(**mount: Any) -> Obj:
        return make_pod({"name": "main", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d",
                                                                              **mount}]},
                        volumes=[{"name": "data", "emptyDir": {}}])

    paths = {"data": f"{POD_DIR}/volumes/data"}
    with pytest.raises(VolumeError, match=r"must not contain '\.\.'"):
        spec_of(mounting(subPath="../../../../etc"), volume_paths=paths)
    with pytest.raises(VolumeError, match="must not be an absolute path"):
        spec_of(mounting(subPath="/etc"), volume_paths=paths)
    with pytest.raises(VolumeError, match="names no volume of the pod"):
        spec_of(mounting(), volume_paths={})


def test_labels_come_from_the_pod_not_from_what_a_user_can_name() -> None:
    # A container named like a label, or pod labels that imitate the runtime's, change nothing
    # the kubelet reads back.
    pod = make_pod({"name": "main", "image": "busybox"})
    pod["metadata"]["labels"] = {LABEL_UID: "someone-else", LABEL_INIT: "true"}
    labels = spec_of(pod).labels
    assert labels[LABEL_UID] == "u-1" and labels[LABEL_INIT] == "false"
