"""Runtimes on one host, and users on one host (issue #10).

- Two runtimes with their own data dirs run containers side by side, each under the cgroup
  parent its data dir owns; restarting either's supervisor (the way a crashed or upgraded agent
  restarts) kills, removes or adopts nothing of the other's: containers, pre-forked zygotes,
  pool and pod groups all survive, and each restarted supervisor finds its own containers.
- A host user (``nobody``) reads no container's config, environment or writable layer, while a
  container running as a non-root user still uses its image and root filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_runtime_containers import remove_and_check, wait_for

from k3py.runtime.archive import import_archive
from k3py.runtime.cgroups import Cgroup
from k3py.runtime.containers import ContainerRuntime, default_cgroup_parent
from k3py.runtime.spec import ContainerSpec, Resources

POD_GROUP = "kubepods/besteffort/pod-side"


def zygotes(rt: ContainerRuntime) -> set[int]:
    supervisor = psutil.Process(rt.supervisor_pid())
    return {child.pid for child in supervisor.children() if child.name() == "k3py-zygote"}


def pool_groups(rt: ContainerRuntime) -> set[str]:
    top = Cgroup(rt.cgroup_parent, "")
    return {n for d in top.dirs.values() if os.path.isdir(d) for n in os.listdir(d) if n.startswith("pool-")}


def alive(rt: ContainerRuntime, cid: str) -> bool:
    status = rt.container_status(cid)
    return status.state == "running" and psutil.pid_exists(status.pid) and \
        psutil.Process(status.pid).status() != psutil.STATUS_ZOMBIE  # fmt: skip


@pytest.fixture
def two_runtimes(tmp_path: Path, test_images: Path) -> Iterator[tuple[ContainerRuntime, ContainerRuntime]]:
    runtimes = []
    for name in ("agent-a", "agent-b"):
        # The default cgroup parent: what two `k3py agent`s with different data dirs get.
        rt = ContainerRuntime(tmp_path / name / "runtime", isolate_mounts=True)
        import_archive(rt.images, test_images / "busybox-oci.tar")
        rt.ensure_supervisor()
        runtimes.append(rt)
    try:
        yield runtimes[0], runtimes[1]
    finally:
        for rt in runtimes:
            for status in rt.list_containers():
                rt.remove_container(status.id, force=True)
            rt.shutdown_supervisor(force=True)
            assert rt.remove_cgroup_parent(), f"{rt.cgroup_parent} still has groups with processes"


def test_two_runtimes_keep_to_their_own_cgroups_across_restarts(
    two_runtimes: tuple[ContainerRuntime, ContainerRuntime],
) -> None:
    a, b = two_runtimes
    assert a.cgroup_parent != b.cgroup_parent
    assert a.cgroup_parent == default_cgroup_parent(a.data_dir) == ContainerRuntime(a.data_dir).cgroup_parent
    assert a.cgroup_parent.startswith("k3py-") and len(a.cgroup_parent) == len("k3py-") + 12
    containers = {}
    for rt in (a, b):
        rt.ensure_cgroup(POD_GROUP, Resources())
        containers[rt.cgroup_parent] = [
            rt.run(ContainerSpec(name="own", image="busybox", command=["sleep", "300"])),
            rt.run(ContainerSpec(name="pod", image="busybox", command=["sleep", "300"], cgroup_parent=POD_GROUP)),
        ]
        assert wait_for(lambda rt=rt: len(zygotes(rt)) == 2 and len(pool_groups(rt)) == 2)
    for restarted, other in ((b, a), (a, b)):
        other_zygotes, other_pools = zygotes(other), pool_groups(other)
        other_supervisor = other.supervisor_pid()
        old = restarted.supervisor_pid()
        os.kill(old, signal.SIGKILL)  # type: ignore[arg-type]
        assert wait_for(lambda rt=restarted: rt.supervisor_pid() is None)
        new = restarted.ensure_supervisor()  # adopts its containers, clears its stale pool
        assert new != old
        # Its own stale pool groups (the killed supervisor's zygotes exit) are gone, new ones made.
        assert wait_for(lambda rt=restarted: len(zygotes(rt)) == 2 and len(pool_groups(rt)) == 2)
        # The other runtime lost nothing: supervisor, zygotes, pool groups, containers.
        assert other.supervisor_pid() == other_supervisor
        assert zygotes(other) == other_zygotes and all(psutil.pid_exists(z) for z in other_zygotes)
        assert pool_groups(other) == other_pools
        for cid in containers[other.cgroup_parent]:
            assert alive(other, cid), f"{other.cgroup_parent}: container {cid} was killed"
        # The restarted one found its own: its containers run on in their groups, exec works.
        for cid in containers[restarted.cgroup_parent]:
            assert alive(restarted, cid)
            assert restarted.exec_sync(cid, ["echo", "still-here"]).stdout == b"still-here\n"
            parent = json.loads((restarted.containers_dir / cid / "config.json").read_text())["cgroup"]["parent"]
            assert parent.startswith(restarted.cgroup_parent)
            assert restarted.container_status(cid).pid in Cgroup(parent, cid).pids()
        # Starting another container uses the new pool; the other runtime's is untouched.
        started = restarted.run(ContainerSpec(name="after", image="busybox", command=["true"]))
        assert restarted.wait_container(started, 30).exit_code == 0
        remove_and_check(restarted, started)
        assert zygotes(other) == other_zygotes
    for rt in (a, b):
        for cid in containers[rt.cgroup_parent]:
            rt.kill_container(cid, signal.SIGKILL)
            rt.wait_container(cid, 10)
            rt.remove_container(cid)
        assert not Cgroup(rt.cgroup_parent, "kubepods").exists()


def test_a_supervisor_of_another_parent_is_replaced_when_idle(tmp_path: Path, test_images: Path) -> None:
    """A data dir started before with another parent (an older k3py's shared ``k3py``, or another
    --cgroup-parent) gets a supervisor on the parent asked for, once the old one is idle."""
    rt = ContainerRuntime(tmp_path / "rt", cgroup_parent=f"k3py-test-old-{os.getpid()}", isolate_mounts=True)
    first = rt.ensure_supervisor()
    again = ContainerRuntime(tmp_path / "rt", isolate_mounts=True)
    second = again.ensure_supervisor()
    try:
        assert second != first
        assert again._ping()["cgroup_parent"] == default_cgroup_parent(tmp_path / "rt")  # type: ignore[index]
    finally:
        again.shutdown_supervisor(force=True)
        again.remove_cgroup_parent()
        rt.remove_cgroup_parent()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


@pytest.fixture
def exposed_runtime(test_images: Path) -> Iterator[ContainerRuntime]:
    """A runtime whose data dir's parents any user may traverse, as /var/lib/k3py is."""
    base = Path(tempfile.mkdtemp(prefix="k3py-perm-", dir="/tmp"))
    os.chmod(base, 0o755)
    rt = ContainerRuntime(base / "agent" / "runtime", isolate_mounts=True)
    os.chmod(base / "agent", 0o755)
    import_archive(rt.images, test_images / "busybox-oci.tar")
    try:
        yield rt
    finally:
        for status in rt.list_containers():
            rt.remove_container(status.id, force=True)
        rt.shutdown_supervisor(force=True)
        rt.remove_cgroup_parent()
        shutil.rmtree(base)


def test_host_users_read_no_container_config_environment_or_writes(exposed_runtime: ContainerRuntime) -> None:
    rt = exposed_runtime
    secret = "s3cr3t-from-a-secretKeyRef"
    cid = rt.run(ContainerSpec(
        name="secretive", image="busybox", env={"DB_PASSWORD": secret},
        command=["sh", "-c", f"echo {secret} > /written.txt; mkdir -p /data && echo {secret} > /data/f; sleep 60"],
    ))  # fmt: skip
    bundle = rt.containers_dir / cid
    written = bundle / "upper" / "written.txt"
    assert wait_for(lambda: written.exists() and written.read_text().strip() == secret)
    assert secret in (bundle / "config.json").read_text()  # it is there, for root
    pid = rt.container_status(cid).pid
    for path, mode in ((rt.data_dir, 0o700), (rt.containers_dir, 0o700), (bundle, 0o700),
                       (rt.sandboxes_dir, 0o700), (rt.images.root, 0o700), (bundle / "config.json", 0o600),
                       (bundle / "meta.json", 0o600), (bundle / "state.json", 0o600)):  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    for target in (bundle / "config.json", bundle / "meta.json", bundle / "state.json", written,
                   bundle / "upper" / "data" / "f", f"/proc/{pid}/environ", bundle / "container.log"):  # fmt: skip
        result = as_nobody("cat", str(target))
        assert result.returncode != 0 and secret not in result.stdout, (target, result)
        assert "Permission denied" in result.stderr, (target, result.stderr)
    for directory in (rt.data_dir, rt.containers_dir, bundle, bundle / "upper", rt.images.layers_dir):
        result = as_nobody("ls", str(directory))
        assert result.returncode != 0 and "Permission denied" in result.stderr, (directory, result)
    grep = as_nobody("grep", "-rs", secret, str(rt.data_dir.parent.parent))
    assert grep.returncode != 0 and secret not in grep.stdout
    remove_and_check(rt, cid)


def test_non_root_container_uses_its_image_and_root(exposed_runtime: ContainerRuntime) -> None:
    """The bundle and layer dirs are root's alone; the container's "/" (the upper dir's mode)
    and its image files keep theirs, so a container running as uid 1000 works as before."""
    rt = exposed_runtime
    script = ("id -u; ls / >/dev/null && echo ls-root-ok; cat /etc/passwd | head -1; echo mine > /tmp/f && "
              "cat /tmp/f; touch /not-mine 2>/dev/null || echo root-not-writable; stat -c %a /")  # fmt: skip
    cid = rt.run(ContainerSpec(name="app", image="busybox", user="1000", command=["sh", "-c", script]))
    status = rt.wait_container(cid, 30)
    out = [line.split(" ", 3)[3] for line in Path(status.log_path).read_text().splitlines()]
    assert status.exit_code == 0, out
    assert out == ["1000", "ls-root-ok", "root:x:0:0:root:/root:/bin/sh", "mine", "root-not-writable", "755"]
    remove_and_check(rt, cid)
    running = rt.run(ContainerSpec(name="app2", image="busybox", user="1000", command=["sleep", "60"]))
    result = rt.exec_sync(running, ["sh", "-c", "id -u; cat /bin/busybox | wc -c"])
    assert result.exit_code == 0 and result.stdout.split()[0] == b"1000" and int(result.stdout.split()[1]) > 100_000
    remove_and_check(rt, running)
