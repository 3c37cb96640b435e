"""Issue #10 acceptance on a real node (``k3py agent``), driven by kubectl: a pod cannot open
a host device it creates with mknod, yet has its /dev/null, /dev/tty and /dev/pts; an image
whose layer carries device nodes imports and runs; a pod running as uid 1000 works; the pod's
cgroups live under the cgroup parent the agent's data dir owns."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.e2e.test_kubectl_workloads import Terminal, _kubectl_argv
from tests.kubelet.conftest import wait_pod
from tests.runtime.conftest import openable_host_block_device, openable_host_device

DENIED = "Operation not permitted"
REPO = Path(__file__).resolve().parents[2]


def running(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running"


def apply_pod(cluster, name: str, image: str = "busybox", command: list[str] | None = None,  # type: ignore[no-untyped-def]
              **extra: object) -> dict:
    container = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": command or ["sleep", "3600"], **extra}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]},
    }))  # fmt: skip
    return wait_pod(cluster, name, running, "Running")


def open_rw(path: str) -> str:
    """sh opening ``path`` read-write, printing ``<path>-OPENED`` if it could (the quotes keep a
    terminal's echo of the command from containing that text)."""
    return f'exec 3<>{path} && echo {path}-OPEN""ED'


def test_default_pod_cannot_open_a_host_device_it_creates(agent_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, node = agent_cluster
    char = openable_host_device(tmp_path)
    block = openable_host_block_device(tmp_path)
    pod = apply_pod(cluster, "attacker")
    attack = cluster.kubectl("exec", "attacker", "--", "sh", "-c",
                             f"mknod /tmp/host c {char[0]} {char[1]} && echo made; {open_rw('/tmp/host')}",
                             check=False)  # fmt: skip
    assert attack.stdout == "made\n", attack
    assert attack.returncode != 0 and DENIED in attack.stderr, attack
    disk = cluster.kubectl("exec", "attacker", "--", "sh", "-c",
                           f"mknod /tmp/disk b {block[0]} {block[1]} && head -c 512 /tmp/disk | wc -c",
                           check=False)  # fmt: skip
    assert DENIED in disk.stderr and disk.stdout.strip() == "0", disk
    usable = cluster.kubectl("exec", "attacker", "--", "sh", "-c",
                             "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c"
                             " && (echo x > /dev/full) 2>&1 | grep -c 'No space left'")  # fmt: skip
    assert usable.stdout.split() == ["3", "4", "1"]
    # A terminal session (kubectl exec -it): its /dev/tty and its pty under /dev/pts.
    terminal = Terminal(_kubectl_argv(cluster, "exec", "-it", "attacker", "--", "sh"))
    try:
        terminal.expect("# ")
        # Subshells: a failed redirection of ``exec`` abandons the rest of an interactive line.
        terminal.type(f"({open_rw('/dev/tty')}); tty; ({open_rw('/tmp/host')})\r")
        # One expectation up to the next prompt (ash reads the terminal while it draws one).
        seen = terminal.expect(f"{DENIED}\r\n/ # ")
        terminal.type("exit 0\r")
    finally:
        code = terminal.close()
    assert code == 0
    assert "/dev/tty-OPENED" in seen and "/dev/pts/" in seen and "/tmp/host-OPENED" not in seen, seen
    # The container's group is below the parent the agent's data dir owns.
    from k3py.runtime.containers import default_cgroup_parent

    top = default_cgroup_parent(node.data_dir / "runtime")
    cid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("k3py://")
    groups = cluster.kubectl("exec", "attacker", "--", "cat", "/proc/1/cgroup").stdout
    expected = f"/{top}/kubepods/besteffort/pod{pod['metadata']['uid']}/{cid}"
    assert f"devices:{expected}" in groups or f"0::{expected}" in groups, groups
    cluster.kubectl("delete", "pod", "attacker", "--wait=true", timeout=60)


def test_privileged_pod_may_open_host_devices(agent_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    char = openable_host_device(tmp_path)
    apply_pod(cluster, "privileged", securityContext={"privileged": True})
    result = cluster.kubectl("exec", "privileged", "--", "sh", "-c",
                             f"mknod /tmp/host c {char[0]} {char[1]}; {open_rw('/tmp/host')}")  # fmt: skip
    assert result.stdout.strip() == "/tmp/host-OPENED"
    cluster.kubectl("delete", "pod", "privileged", "--wait=true", timeout=60)


def test_pod_running_as_uid_1000_uses_its_image(agent_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, _node = agent_cluster
    apply_pod(cluster, "app-user", securityContext={"runAsUser": 1000, "runAsGroup": 1000})
    result = cluster.kubectl("exec", "app-user", "--", "sh", "-c",
                             "id -u; ls / > /dev/null && echo root-listed; head -1 /etc/passwd;"
                             " echo mine > /tmp/f && cat /tmp/f")  # fmt: skip
    assert result.stdout.split("\n")[:4] == ["1000", "root-listed", "root:x:0:0:root:/root:/bin/sh", "mine"]
    cluster.kubectl("delete", "pod", "app-user", "--wait=true", timeout=60)


def test_image_with_device_nodes_imports_and_runs(agent_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.runtime.imagebuilder import Entry, busybox_layer, layer_tar, write_oci_archive

    cluster, node = agent_cluster
    char = openable_host_device(tmp_path)
    nodes = layer_tar([
        Entry("dev", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/console", tarfile.CHRTYPE, mode=0o600, devmajor=5, devminor=1),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("nodes", tarfile.DIRTYPE, mode=0o755),
        Entry("nodes/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("nodes/host", tarfile.CHRTYPE, mode=0o666, devmajor=char[0], devminor=char[1]),
    ])  # fmt: skip
    archive = tmp_path / "debootstrap-like.tar"
    write_oci_archive(archive, [busybox_layer(), nodes], "docker.io/library/with-nodes:1")
    imported = subprocess.run(
        [sys.executable, "-m", "k3py", "image", "import", "--data-dir", str(node.data_dir / "runtime"), str(archive)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert imported.returncode == 0 and "imported docker.io/library/with-nodes:1" in imported.stdout, imported
    apply_pod(cluster, "with-nodes", image="docker.io/library/with-nodes:1", imagePullPolicy="Never")
    result = cluster.kubectl("exec", "with-nodes", "--", "sh", "-c",
                             f"echo x > /nodes/null && echo image-null-ok; {open_rw('/nodes/host')}", check=False)
    assert result.stdout == "image-null-ok\n" and DENIED in result.stderr, result
    cluster.kubectl("delete", "pod", "with-nodes", "--wait=true", timeout=60)


def test_server_cgroup_parent_flag_places_the_in_process_node_pods(tmp_path: Path) -> None:
    """``k3py server --cgroup-parent NAME``: the in-process node's pods live below NAME (and the
    test cluster's cleanup removes that parent with them)."""
    import os
    import secrets

    from k3py.runtime.archive import import_archive
    from k3py.runtime.cgroups import Cgroup
    from k3py.runtime.images import ImageStore
    from tests.cluster import TestCluster
    from tests.kubelet.conftest import busybox_archive

    parent = f"k3py-flag-{secrets.token_hex(4)}"
    import_archive(ImageStore(tmp_path / "agent" / "runtime" / "images"), busybox_archive())
    with TestCluster(tmp_path, ["--cgroup-parent", parent], agent=True) as cluster:
        pod = apply_pod(cluster, "placed")
        groups = cluster.kubectl("exec", "placed", "--", "cat", "/proc/1/cgroup").stdout
        assert f":/{parent}/kubepods/besteffort/pod{pod['metadata']['uid']}/" in groups, groups
    assert not Cgroup(parent, "").exists()
    refused = subprocess.run(
        [sys.executable, "-m", "k3py", "agent", "--server", "https://127.0.0.1:1", "--token", "t",
         "--cgroup-parent", "../escape"], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ},
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--cgroup-parent '../escape' must be a cgroup path" in refused.stderr
