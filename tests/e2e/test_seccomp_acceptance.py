"""Issue #10 acceptance, as a kubectl user sees it: seccomp profiles, hostPID, hostUsers.

One ``k3py server --seccomp-default`` with its in-process node agent runs debian:stable pods
(debootstrap-built, imported before start): one without a profile (so RuntimeDefault by the
flag), a "restricted" one asking RuntimeDefault itself, an Unconfined one, a privileged one,
one under a Localhost profile that refuses mkdir, one whose Localhost profile is missing, and
a hostPID one. The checks run in ``kubectl exec`` sessions, which get the container's filter.
``unshare`` comes from util-linux in the image; keyctl (no keyutils in a minbase root) is
called through perl's ``syscall``. A separate ``k3py agent --seccomp-default`` node checks the
agent's flag; ``hostUsers: false`` is refused by the API server with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.runtime import seccomp
from tests.cluster import TestCluster
from tests.e2e.test_kubectl_workloads import _node_ready, _wait_running
from tests.images import debian_archive
from tests.kubelet.conftest import TOKEN, AgentNode, busybox_archive, teardown_runtime, wait_pod

KEYCTL = seccomp.syscall_table(seccomp.MACHINE_ABIS[os.uname().machine][0])["keyctl"]
# KEYCTL_GET_KEYRING_ID of the session keyring: harmless, and refused under RuntimeDefault.
PERL_KEYCTL = f'my $r = syscall({KEYCTL}, 0, -3, 0); print $r < 0 ? "keyctl: $!\\n" : "keyctl: ok\\n"'
SLEEP = ["bash", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
NO_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}
RESTRICTED = {
    "runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}  # fmt: skip


def _pod(name: str, pod_security: dict | None = None, image: str = "debian:stable", **spec: object) -> dict:
    container = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": SLEEP}
    container.update(spec.pop("container", {}))  # type: ignore[call-overload]
    extra = list(spec.pop("containers_extra", []))  # type: ignore[call-overload]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 2, "securityContext": pod_security or {},
                 "containers": [container, *extra], **spec},
    }  # fmt: skip


def _manifests() -> list[dict]:
    localhost = {"type": "Localhost", "localhostProfile": "profiles/no-mkdir.json"}
    return [
        _pod("defaulted"),
        _pod("restricted", {"seccompProfile": {"type": "RuntimeDefault"}},
             container={"securityContext": RESTRICTED}),
        _pod("unconfined", container={"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        _pod("privileged", container={"securityContext": {"privileged": True}}),
        _pod("localhost", {"seccompProfile": localhost}),
        _pod("missing", {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/absent.json"}}),
        _pod("hostpid", hostPID=True),
        _pod("hostipc", hostIPC=True),
        _pod("hostnet", hostNetwork=True, container={"name": "first"},
             containers_extra=[{"name": "second", "image": "debian:stable",
                                "imagePullPolicy": "IfNotPresent", "command": SLEEP}]),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    debian = debian_archive()
    base = tmp_path_factory.mktemp("seccomp-e2e")
    import_archive(ImageStore(base / "agent" / "runtime" / "images"), debian)
    profiles = base / "agent" / "seccomp" / "profiles"  # the kubelet's seccomp dir, as /var/lib/kubelet/seccomp
    profiles.mkdir(parents=True)
    (profiles / "no-mkdir.json").write_text(json.dumps(NO_MKDIR))
    with TestCluster(base, ["--seccomp-default"], agent=True) as cluster:
        cluster.wait_for(lambda: _node_ready(cluster), timeout=60, interval=0.2,
                         what=f"a Ready node\n{cluster.server_log()}")  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _manifests()}))
        yield cluster


def _exec(cluster: TestCluster, pod: str, script: str) -> str:
    result = cluster.kubectl("exec", pod, "--", "bash", "-c", script, check=False)
    return result.stdout + result.stderr


CHECK = (
    "grep '^Seccomp:' /proc/self/status; unshare -U true 2>&1; echo unshare=$?; "
    f"perl -e '{PERL_KEYCTL}'"
)


def test_runtime_default_by_seccomp_default_flag(cluster: TestCluster) -> None:
    _wait_running(cluster, "defaulted")
    out = _exec(cluster, "defaulted", CHECK)
    assert "Seccomp:\t2" in out, out
    assert "unshare: unshare failed: Operation not permitted" in out and "unshare=1" in out, out
    assert "keyctl: Operation not permitted" in out, out


def test_restricted_pod_cannot_create_a_user_namespace(cluster: TestCluster) -> None:
    """The issue's finding: every "restricted" setting, yet `unshare -U` gave a namespace with
    all capabilities inside. RuntimeDefault refuses unshare altogether."""
    _wait_running(cluster, "restricted")
    out = _exec(cluster, "restricted", CHECK + "; id -u; grep NoNewPrivs /proc/self/status")
    assert "Seccomp:\t2" in out and "unshare=1" in out and "Operation not permitted" in out, out
    assert "65534" in out and "NoNewPrivs:\t1" in out, out
    attempts = _exec(cluster, "restricted", "unshare -Ur id 2>&1; unshare -m true 2>&1; unshare -n true 2>&1; echo done")
    assert attempts.count("Operation not permitted") == 3 and "uid=0" not in attempts, attempts


def test_unconfined_and_privileged_pods_have_no_filter(cluster: TestCluster) -> None:
    for name in ("unconfined", "privileged"):
        _wait_running(cluster, name)
        out = _exec(cluster, name, CHECK)
        assert "Seccomp:\t0" in out and "unshare=0" in out, (name, out)
        assert "keyctl: Operation not permitted" not in out, (name, out)


def test_localhost_profile_refuses_mkdir(cluster: TestCluster) -> None:
    _wait_running(cluster, "localhost")
    out = _exec(cluster, "localhost", "grep '^Seccomp:' /proc/self/status; mkdir /tmp/new; echo mkdir=$?; "
                                      "touch /tmp/file && echo touched; unshare -U true && echo unshared")  # fmt: skip
    assert "Seccomp:\t2" in out and "mkdir: cannot create directory '/tmp/new': Operation not permitted" in out, out
    assert "mkdir=1" in out and "touched" in out and "unshared" in out, out  # only mkdir is refused


def test_missing_localhost_profile_keeps_the_pod_from_starting(cluster: TestCluster, tmp_path: Path) -> None:
    path = cluster.agent_dir / "seccomp" / "profiles" / "absent.json"
    message = f'cannot load seccomp profile "{path}": open {path}: no such file or directory'

    def waiting(pod: dict) -> bool:
        state = ((pod["status"].get("containerStatuses") or [{}])[0]).get("state", {})
        return state.get("waiting", {}).get("reason") == "CreateContainerError"

    pod = wait_pod(cluster, "missing", waiting, "CreateContainerError", timeout=60)
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == message
    assert f"Error: {message}" in cluster.kubectl("describe", "pod", "missing").stdout
    table = cluster.kubectl("get", "pod", "missing").stdout
    assert "CreateContainerError" in table, table


def test_host_pid_pod_sees_the_node_processes(cluster: TestCluster) -> None:
    assert cluster.process is not None
    server = cluster.process.pid  # nsenter and unshare exec: this is the k3py server itself
    _wait_running(cluster, "hostpid")
    script = f"tr '\\0' ' ' < /proc/{server}/cmdline 2>&1; echo; ls /proc | grep -c '^[0-9]'"
    out = _exec(cluster, "hostpid", script).splitlines()
    assert "k3py server" in out[0] and int(out[1]) > 10, out
    out = _exec(cluster, "defaulted", script).splitlines()
    assert "k3py server" not in out[0] and int(out[1]) <= 5, out


def test_host_ipc_and_host_network_pods_share_the_right_namespaces(cluster: TestCluster) -> None:
    """hostIPC joins the node's IPC namespace; the containers of a pod share one IPC namespace
    (hostNetwork pods too), and only hostIPC makes it the node's."""
    assert cluster.process is not None
    node_ipc = os.readlink(f"/proc/{cluster.process.pid}/ns/ipc")
    node_uts = os.readlink(f"/proc/{cluster.process.pid}/ns/uts")
    for name in ("hostipc", "hostnet", "defaulted"):
        _wait_running(cluster, name)

    def namespaces(pod: str, container: str | None = None) -> list[str]:
        where = [pod, "-c", container] if container else [pod]
        return cluster.kubectl("exec", *where, "--", "readlink", "/proc/self/ns/ipc", "/proc/self/ns/uts").stdout.split()

    assert namespaces("hostipc")[0] == node_ipc
    first, second = namespaces("hostnet", "first"), namespaces("hostnet", "second")
    assert first == second, (first, second)  # one pod, one IPC namespace
    assert first[0] != node_ipc and first[1] == node_uts  # hostNetwork shares the node's hostname
    assert namespaces("defaulted")[0] != node_ipc


def test_host_users_false_is_refused_by_the_api_server(cluster: TestCluster) -> None:
    pod = _pod("userns", hostUsers=False)
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'The Pod "userns" is invalid: spec.hostUsers: Forbidden: user namespaces are not supported' in result.stderr
    assert cluster.kubectl("get", "pod", "userns", check=False).returncode != 0  # nothing was created
    pod = _pod("userns", hostUsers=False, hostPID=True)
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    assert "spec.hostPID: Forbidden: when `hostUsers` is false" in result.stderr, result.stderr


def test_agent_flag_seccomp_default(tmp_path: Path) -> None:
    """`k3py agent --seccomp-default`: a pod without a profile runs under RuntimeDefault."""
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    agent_dir = tmp_path / "agent"
    import_archive(ImageStore(agent_dir / "runtime" / "images"), busybox_archive())
    with TestCluster(tmp_path, ["--disable-agent", "--token", TOKEN]) as cluster:
        node = AgentNode(cluster, agent_dir, tmp_path / "agent.log", extra_args=["--seccomp-default"])
        try:
            node.start()
            node.wait_node_ready()
            pod = _pod("plain", image="busybox", restartPolicy="Never",
                       container={"command": ["sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true"]})
            cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
            wait_pod(cluster, "plain", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), "the pod's exit",
                     timeout=60)  # fmt: skip
            logs = cluster.kubectl("logs", "plain").stdout
            assert "Seccomp:\t2" in logs and "Operation not permitted" in logs, logs
        finally:
            node.stop()
            teardown_runtime(agent_dir)
