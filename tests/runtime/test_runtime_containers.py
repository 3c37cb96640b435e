"""Busybox containers run by the real runtime: namespaces, identity, limits, logs, exec, supervision.

One runtime (with its supervisor in a private mount namespace, so its mounts never reach the
host) serves the module; every test removes its containers and checks that nothing is left:
no process, no cgroup directory, no bundle, no mount.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.runtime.archive import import_archive
from k3py.runtime.cgroups import Cgroup
from k3py.runtime.containers import ContainerError, ContainerRuntime
from k3py.runtime.spec import ContainerSpec, Mount, Resources, SandboxSpec

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) (F|P) (.*)$")
# containerd's default capability set, by number: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4,
# KILL 5, SETGID 6, SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10, NET_RAW 13, SYS_CHROOT 18,
# MKNOD 27, AUDIT_WRITE 29, SETFCAP 31.
DEFAULT_CAPS = sum(1 << n for n in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))
REPO = Path(__file__).resolve().parents[2]


def make_runtime(data_dir: Path, test_images: Path) -> ContainerRuntime:
    rt = ContainerRuntime(
        data_dir, cgroup_parent=f"k3py-test-{secrets.token_hex(4)}", isolate_mounts=True
    )
    import_archive(rt.images, test_images / "busybox-oci.tar")
    rt.ensure_supervisor()
    return rt


def tear_down(rt: ContainerRuntime) -> list[str]:
    """Remove everything ``rt`` still has; returns what a test left behind (should be nothing)."""
    leftovers = [s.id for s in rt.list_containers()]
    for cid in leftovers:
        rt.remove_container(cid, force=True)
    for sandbox in rt.list_sandboxes():
        rt.remove_sandbox(sandbox.id)
    supervisor = rt.supervisor_pid()
    rt.shutdown_supervisor(force=True)
    if supervisor:
        assert wait_for(lambda: not Path(f"/proc/{supervisor}").exists() or is_zombie(supervisor))
    for directory in Cgroup(rt.cgroup_parent, "").dirs.values():
        if os.path.isdir(directory):
            children = [
                e for e in os.listdir(directory) if os.path.isdir(os.path.join(directory, e))
            ]
            assert children == [], f"cgroups left behind in {directory}"
            os.rmdir(directory)
    return leftovers


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, test_images: Path
) -> Iterator[ContainerRuntime]:
    rt = make_runtime(tmp_path_factory.mktemp("runtime"), test_images)
    yield rt
    assert tear_down(rt) == [], "a test left containers behind"


@pytest.fixture
def own_runtime(tmp_path: Path, test_images: Path) -> Iterator[ContainerRuntime]:
    """A runtime (and supervisor) of the test's own, torn down even when the test fails."""
    rt = make_runtime(tmp_path / "rt", test_images)
    yield rt
    tear_down(rt)


def is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def supervisor_mounts(rt: ContainerRuntime) -> list[str]:
    pid = rt.supervisor_pid()
    return Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if pid else []


def remove_and_check(rt: ContainerRuntime, cid: str) -> None:
    status = rt.container_status(cid)
    bundle = rt.containers_dir / cid
    rt.remove_container(cid, force=True)
    assert not bundle.exists()
    assert not Cgroup(rt.cgroup_parent, cid).exists()
    if status.pid:
        assert wait_for(lambda: not Path(f"/proc/{status.pid}").exists() or is_zombie(status.pid))
    assert not [m for m in supervisor_mounts(rt) if cid in m]


def run_to_exit(
    rt: ContainerRuntime, script: str, **spec
) -> tuple[int, str, list[tuple[str, str, str]], str]:
    """Run ``sh -c script``; returns (exit code, reason, [(stream, tag, text)], cid) after removal."""
    cid = rt.run(
        ContainerSpec(
            name=spec.pop("name", "t"), image="busybox", command=["sh", "-c", script], **spec
        )
    )
    status = rt.wait_container(cid, 30)
    lines = []
    for raw in Path(status.log_path).read_text().splitlines():
        match = LOG_LINE.match(raw)
        assert match, f"not a CRI log line: {raw!r}"
        lines.append((match[2], match[3], match[4]))
    remove_and_check(rt, cid)
    return status.exit_code, status.reason, lines, cid


def stdout_of(lines: list[tuple[str, str, str]]) -> list[str]:
    return [text for stream, _, text in lines if stream == "stdout"]


def test_exit_codes_and_cri_logs(runtime: ContainerRuntime) -> None:
    code, reason, lines, _ = run_to_exit(runtime, "echo out; echo err >&2; exit 7")
    assert (code, reason) == (7, "Error")
    assert ("stdout", "F", "out") in lines and ("stderr", "F", "err") in lines
    code, reason, _, _ = run_to_exit(runtime, "true")
    assert (code, reason) == (0, "Completed")


def test_log_timestamps_are_ordered_and_recent(runtime: ContainerRuntime) -> None:
    before = time.time()
    cid = runtime.run(
        ContainerSpec(
            name="ts", image="busybox", command=["sh", "-c", "echo a; sleep 0.05; echo b"]
        )
    )
    status = runtime.wait_container(cid, 30)
    stamps = [LOG_LINE.match(line)[1] for line in Path(status.log_path).read_text().splitlines()]
    remove_and_check(runtime, cid)
    assert len(stamps) == 2 and stamps[0] < stamps[1]
    from datetime import datetime

    first = (
        datetime.strptime(stamps[0][:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() - time.timezone
    )
    assert before - 1 < first < time.time() + 1
    assert status.started_at <= status.finished_at


def test_long_lines_are_split_into_partial_entries(runtime: ContainerRuntime) -> None:
    _, _, lines, _ = run_to_exit(runtime, "head -c 40000 /dev/zero | tr '\\0' x; echo; printf tail")
    tags = [(tag, len(text)) for _, tag, text in lines]
    assert tags == [("P", 16384), ("P", 16384), ("F", 40000 - 2 * 16384), ("F", 4)]


def test_log_rotation_by_size(runtime: ContainerRuntime, tmp_path: Path) -> None:
    log = tmp_path / "pods" / "c.log"
    cid = runtime.run(
        ContainerSpec(
            name="rot",
            image="busybox",
            command=["sh", "-c", "for i in $(seq 1 300); do echo line-$i; done"],
            log_path=str(log),
            log_max_size=4000,
            log_max_files=3,
        )
    )
    runtime.wait_container(cid, 30)
    remove_and_check(runtime, cid)
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["c.log", "c.log.1", "c.log.2"]
    texts = [(log.parent / name).read_text() for name in ("c.log.2", "c.log.1", "c.log")]
    assert all(len(t) <= 4100 for t in texts)
    numbers = [int(line.rsplit("-", 1)[1]) for t in texts for line in t.splitlines()]
    assert numbers == list(range(numbers[0], 301))  # the newest lines, in order, none lost


def test_a_large_environment_reaches_the_container(runtime: ContainerRuntime) -> None:
    """A config larger than one zygote message (64 KiB once) still starts, with all of it
    (each variable under execve's 128 KiB limit for one string)."""
    env = {f"BIG{n}": str(n) * 60_000 for n in range(2)}
    code, _, lines, _ = run_to_exit(runtime, 'echo "${#BIG0} ${#BIG1} ${BIG1:0:3}"', env=env)
    assert code == 0 and stdout_of(lines) == ["60000 60000 111"]


def test_env_user_working_dir_and_hostname(runtime: ContainerRuntime) -> None:
    code, _, lines, _ = run_to_exit(
        runtime,
        'echo "$FOO|$PATH|$HOME"; pwd; id -u; id -g; id -G; hostname',
        env={"FOO": "bar baz"},
        working_dir="/work/dir",
        user="app",
        supplemental_groups=[3000],
        hostname="myhost",
    )
    assert code == 0
    assert stdout_of(lines) == [
        "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/home",
        "/work/dir",
        "1000",
        "1000",
        "1000 2000 3000",
        "myhost",
    ]
    _, _, lines, _ = run_to_exit(runtime, "id -u; id -g", user="4242:4343")
    assert stdout_of(lines) == ["4242", "4343"]


def test_unknown_user_is_a_clear_start_error(runtime: ContainerRuntime) -> None:
    cid = runtime.create_container(
        ContainerSpec(name="u", image="busybox", command=["true"], user="nosuchuser")
    )
    with pytest.raises(ContainerError, match="unable to find user nosuchuser"):
        runtime.start_container(cid)
    status = runtime.container_status(cid)
    assert (status.state, status.exit_code, status.reason) == ("exited", 128, "StartError")
    remove_and_check(runtime, cid)


def test_missing_executable_is_a_start_error(runtime: ContainerRuntime) -> None:
    cid = runtime.create_container(
        ContainerSpec(name="m", image="busybox", command=["/no/such/binary"])
    )
    with pytest.raises(ContainerError, match="executable file not found"):
        runtime.start_container(cid)
    remove_and_check(runtime, cid)


def test_sees_only_its_own_processes_and_root(runtime: ContainerRuntime) -> None:
    _, _, lines, _ = run_to_exit(
        runtime,
        "ps -o pid,comm > /tmp/ps; tail -n +2 /tmp/ps; echo ---; ls /; echo ---; cat /proc/1/cmdline | tr '\\0' ' '",
    )
    out = stdout_of(lines)
    sep1, sep2 = out.index("---"), len(out) - 1 - out[::-1].index("---")
    procs = [line.split() for line in out[:sep1]]
    assert procs == [["1", "sh"], ["2", "ps"]]
    assert out[sep1 + 1 : sep2] == [
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "root",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "var",
    ]
    assert out[-1].startswith("sh -c ps -o pid,comm > /tmp/ps")


def test_proc_and_sys_are_masked_and_read_only(runtime: ContainerRuntime) -> None:
    _, _, lines, _ = run_to_exit(
        runtime,
        "wc -c < /proc/timer_list; echo x > /proc/sys/kernel/domainname && echo wrote-proc-sys; "
        "touch /sys/x 2>/dev/null || echo sys-ro; ls /dev; ls -l /dev/null | cut -c1-10",
    )
    out = stdout_of(lines)
    assert out[0] == "0"
    assert "wrote-proc-sys" not in out and "sys-ro" in out
    for node in (
        "full",
        "null",
        "pts",
        "ptmx",
        "random",
        "shm",
        "mqueue",
        "tty",
        "urandom",
        "zero",
        "fd",
    ):
        assert node in out
    assert out[-1] == "crw-rw-rw-"


def cap_line(lines: list[tuple[str, str, str]], name: str) -> int:
    [value] = [text.split()[1] for _, _, text in lines if text.startswith(name + ":")]
    return int(value, 16)


def test_capabilities_as_configured(runtime: ContainerRuntime) -> None:
    script = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status"
    _, _, lines, _ = run_to_exit(runtime, script)
    assert cap_line(lines, "CapBnd") == cap_line(lines, "CapEff") == DEFAULT_CAPS
    assert cap_line(lines, "CapInh") == 0 and cap_line(lines, "NoNewPrivs") == 0
    _, _, lines, _ = run_to_exit(
        runtime,
        script,
        capabilities_drop=["ALL"],
        capabilities_add=["NET_ADMIN"],
        no_new_privs=True,
    )
    assert cap_line(lines, "CapBnd") == cap_line(lines, "CapEff") == 1 << 12
    assert cap_line(lines, "NoNewPrivs") == 1
    _, _, lines, _ = run_to_exit(runtime, script, capabilities_drop=["CHOWN", "KILL"])
    assert cap_line(lines, "CapEff") == DEFAULT_CAPS & ~(1 << 0) & ~(1 << 5)
    _, _, lines, _ = run_to_exit(runtime, script, privileged=True)
    ours = [
        line
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("CapEff:")
    ]
    assert cap_line(lines, "CapEff") == int(ours[0].split()[1], 16)  # everything the host grants us
    _, _, lines, _ = run_to_exit(runtime, script, user="1000")
    assert cap_line(lines, "CapEff") == 0 and cap_line(lines, "CapBnd") == DEFAULT_CAPS
    # Without CAP_CHOWN, chown fails as it would in any runtime.
    code, _, _, _ = run_to_exit(
        runtime, "touch /tmp/f && chown 1000 /tmp/f", capabilities_drop=["CHOWN"]
    )
    assert code != 0


def test_read_only_root_and_mounts(runtime: ContainerRuntime, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "cfg").write_text("config\n")
    _, _, lines, _ = run_to_exit(
        runtime,
        "touch /x 2>/dev/null || echo root-ro; echo hi > /scratch/f && cat /scratch/f; cat /data/in.txt; "
        "echo out > /data/out.txt; cat /etc/app/cfg; echo no > /etc/app/cfg 2>/dev/null || echo cfg-ro",
        readonly_rootfs=True,
        mounts=[
            Mount("/scratch", type="tmpfs"),
            Mount("/data", source=str(shared)),
            Mount("/etc/app", source=str(ro), readonly=True),
        ],
    )
    assert stdout_of(lines) == ["root-ro", "hi", "from host", "config", "cfg-ro"]
    assert (shared / "out.txt").read_text() == "out\n"
    assert (ro / "cfg").read_text() == "config\n"


def test_image_symlinks_cannot_redirect_mounts_to_the_host(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    # /tmp/escape -> / inside the image root: a mount at /tmp/escape/etc/x must land in the container.
    src = tmp_path / "payload"
    src.mkdir()
    _, _, lines, _ = run_to_exit(
        runtime,
        "ls /etc/x >/dev/null && echo mounted",
        mounts=[Mount("/var/../etc/x", source=str(src))],
    )
    assert stdout_of(lines) == ["mounted"]
    assert not Path("/etc/x").exists()


def test_memory_limit_is_oom_killed(runtime: ContainerRuntime) -> None:
    code, reason, _, _ = run_to_exit(
        runtime,
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
        resources=Resources(memory_limit=16 << 20),
    )
    assert (code, reason) == (137, "OOMKilled")


def test_pids_limit(runtime: ContainerRuntime) -> None:
    cid = runtime.run(
        ContainerSpec(
            name="pids",
            image="busybox",
            command=[
                "sh",
                "-c",
                "(for i in $(seq 20); do sleep 60 & done); echo spawned; sleep 60",
            ],
            resources=Resources(pids_limit=8),
        )
    )
    log = Path(runtime.container_status(cid).log_path)
    # The subshell dies of the fork failure; its sleeps and the main shell fill the limit.
    assert wait_for(lambda: "can't fork" in log.read_text() and "spawned" in log.read_text())
    assert 1 < runtime.container_stats(cid)["pids"] <= 8
    cg = Cgroup(runtime.cgroup_parent, cid)
    events = Path(cg.dirs["" if cg.v2 else "pids"], "pids.events").read_text().split()
    assert int(events[events.index("max") + 1]) > 0  # the kernel refused forks at the limit
    assert runtime.container_status(cid).state == "running"
    status = runtime.stop_container(cid, timeout=0)
    assert status.exit_code == 137
    remove_and_check(runtime, cid)


def test_cpu_and_memory_limits_are_written(runtime: ContainerRuntime) -> None:
    cid = runtime.run(
        ContainerSpec(
            name="cpu",
            image="busybox",
            command=["sleep", "60"],
            resources=Resources(cpu_shares=512, cpu_quota=50_000, memory_limit=64 << 20),
        )
    )
    cg = Cgroup(runtime.cgroup_parent, cid)
    if cg.v2:
        assert Path(cg.dirs[""], "cpu.max").read_text().split() == ["50000", "100000"]
        assert Path(cg.dirs[""], "memory.max").read_text().strip() == str(64 << 20)
    else:
        assert Path(cg.dirs["cpu"], "cpu.shares").read_text().strip() == "512"
        assert Path(cg.dirs["cpu"], "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert Path(cg.dirs["memory"], "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (
        str(runtime.container_status(cid).pid)
        in Path(cg.dirs["" if cg.v2 else "memory"], "cgroup.procs").read_text().split()
    )
    stats = runtime.container_stats(cid)
    assert stats["memory_bytes"] > 0 and stats["pids"] == 1
    runtime.update_container_resources(
        cid, Resources(cpu_quota=20_000, memory_limit=48 << 20, pids_limit=4)
    )
    if cg.v2:
        assert Path(cg.dirs[""], "cpu.max").read_text().split() == ["20000", "100000"]
    else:
        assert Path(cg.dirs["cpu"], "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert Path(cg.dirs["memory"], "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
        assert Path(cg.dirs["pids"], "pids.max").read_text().strip() == "4"
    remove_and_check(runtime, cid)


def test_stop_sends_term_then_kill(runtime: ContainerRuntime) -> None:
    trapping = runtime.run(
        ContainerSpec(
            name="trap",
            image="busybox",
            command=[
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
            ],
        )
    )
    ignoring = runtime.run(ContainerSpec(name="sleep", image="busybox", command=["sleep", "60"]))
    log = Path(runtime.container_status(trapping).log_path)
    assert wait_for(lambda: "ready" in log.read_text())  # TERM before the trap would be ignored
    status = runtime.stop_container(trapping, timeout=10)
    assert (status.exit_code, status.reason) == (0, "Completed")
    start = time.monotonic()
    status = runtime.stop_container(
        ignoring, timeout=0.3
    )  # pid 1 without a TERM handler ignores it
    assert status.exit_code == 137 and time.monotonic() - start >= 0.3
    with pytest.raises(ContainerError, match="running"):
        runtime.remove_container(
            runtime.run(ContainerSpec(name="r", image="busybox", command=["sleep", "60"]))
        )
    for status in runtime.list_containers():
        remove_and_check(runtime, status.id)


def test_exec_without_tty(runtime: ContainerRuntime) -> None:
    cid = runtime.run(
        ContainerSpec(
            name="ex", image="busybox", command=["sleep", "60"], hostname="exhost", env={"A": "1"}
        )
    )
    result = runtime.exec_sync(
        cid,
        ["sh", "-c", "echo $A; hostname; cat /proc/1/cmdline; echo; id -u; echo oops >&2; exit 5"],
    )
    assert result.exit_code == 5
    assert result.stdout.decode().split("\n")[:4] == ["1", "exhost", "sleep\x0060\x00", "0"]
    assert result.stderr == b"oops\n"
    assert runtime.exec_sync(cid, ["cat"], input=b"piped input").stdout == b"piped input"
    assert runtime.exec_sync(cid, ["sh", "-c", "echo $A $B"], timeout=10).stdout == b"1\n"
    session = runtime.exec(cid, ["sh", "-c", "echo $B"], env={"B": "2"}, user="1000")
    assert session.wait(10) == 0 and os.read(session.stdout, 100) == b"2\n"
    session.close()
    with pytest.raises(ContainerError, match="executable file not found"):
        runtime.exec_sync(cid, ["nosuchcommand"])
    # The exec'd process is in the container's pid namespace and cgroup.
    ps = runtime.exec_sync(cid, ["ps", "-o", "pid,comm"]).stdout.decode().split("\n")[1:]
    assert [line.split()[1] for line in ps if line] == ["sleep", "ps"]
    remove_and_check(runtime, cid)


def test_exec_with_tty_and_resize(runtime: ContainerRuntime) -> None:
    cid = runtime.run(ContainerSpec(name="tty", image="busybox", command=["sleep", "60"]))
    session = runtime.exec(cid, ["sh"], tty=True)
    session.resize(40, 100)
    os.write(session.stdout, b"stty size; [ -t 0 ] && echo IS-A-TTY; exit 3\n")
    output = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = os.read(session.stdout, 4096)
        except OSError:  # EIO once the last slave closes
            break
        if not chunk:
            break
        output += chunk
    assert session.wait(10) == 3
    session.close()
    text = output.decode()
    assert "40 100" in text and "IS-A-TTY" in text
    remove_and_check(runtime, cid)


def test_sandbox_shares_namespaces_between_containers(runtime: ContainerRuntime) -> None:
    sandbox = runtime.create_sandbox(SandboxSpec(name="pod-a", hostname="pod-a"))
    ids = [
        runtime.run(
            ContainerSpec(
                name=f"c{i}", image="busybox", command=["sleep", "60"], sandbox_id=sandbox.id
            )
        )
        for i in range(2)
    ]
    views = [
        runtime.exec_sync(
            cid,
            ["sh", "-c", "hostname; for n in net ipc uts pid; do readlink /proc/self/ns/$n; done"],
        )
        .stdout.decode()
        .split()
        for cid in ids
    ]
    assert views[0][0] == views[1][0] == "pod-a"
    assert views[0][1:4] == views[1][1:4]  # net, ipc, uts shared
    assert views[0][4] != views[1][4]  # each container has its own pid namespace
    assert views[0][1] != os.readlink("/proc/self/ns/net")
    loopback = (
        runtime.exec_sync(ids[0], ["cat", "/sys/class/net/lo/operstate"]).stdout.decode().strip()
    )
    assert loopback in ("unknown", "up")
    with pytest.raises(ContainerError, match="still has containers"):
        runtime.remove_sandbox(sandbox.id)
    for cid in ids:
        remove_and_check(runtime, cid)
    runtime.remove_sandbox(sandbox.id)
    assert not [m for m in supervisor_mounts(runtime) if sandbox.id in m]
    assert not (runtime.sandboxes_dir / sandbox.id).exists()


CLIENT_SCRIPT = """
import os, signal, sys
from pathlib import Path
from k3py.runtime.containers import ContainerRuntime
from k3py.runtime.spec import ContainerSpec
rt = ContainerRuntime(Path(sys.argv[1]), cgroup_parent=sys.argv[2], isolate_mounts=True)
cid = rt.run(ContainerSpec(name="survivor", image="busybox",
                           command=["sh", "-c", "echo before; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo after; exit 4"]))
print(cid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_container_survives_its_client_being_killed(runtime: ContainerRuntime) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, str(runtime.data_dir), runtime.cgroup_parent],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    cid = result.stdout.strip()
    fresh = ContainerRuntime(
        runtime.data_dir, cgroup_parent=runtime.cgroup_parent, isolate_mounts=True
    )
    assert fresh.container_status(cid).state == "running"
    assert fresh.exec_sync(cid, ["touch", "/tmp/go"]).exit_code == 0
    status = fresh.wait_container(cid, 30)
    assert (status.state, status.exit_code) == ("exited", 4)
    assert [LOG_LINE.match(line)[4] for line in Path(status.log_path).read_text().splitlines()] == [
        "before",
        "after",
    ]
    remove_and_check(fresh, cid)


def test_supervisor_restart_adopts_running_containers(own_runtime: ContainerRuntime) -> None:
    rt = own_runtime
    finished = rt.run(ContainerSpec(name="done", image="busybox", command=["true"]))
    rt.wait_container(finished, 10)
    ticking = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.02; done"
    cid = rt.run(ContainerSpec(name="adopted", image="busybox", command=["sh", "-c", ticking]))
    log = Path(rt.container_status(cid).log_path)

    def last_tick() -> int:
        lines = log.read_text().splitlines()
        return int(lines[-1].rsplit("-", 1)[1]) if lines else -1

    assert wait_for(lambda: last_tick() >= 3)
    old = rt.supervisor_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: rt.supervisor_pid() is None)
    before_restart = last_tick()
    assert rt.container_status(cid).state == "running"  # state lives in files
    new = rt.ensure_supervisor()
    assert new != old
    assert rt.container_status(finished).exit_code == 0
    # The container outlived its supervisor (no SIGPIPE: it keeps spare read ends of its pipes)
    # and the new supervisor took those back: the log goes on, nothing printed meanwhile lost.
    assert wait_for(lambda: last_tick() > before_restart + 10)
    ticks = [int(line.rsplit("-", 1)[1]) for line in log.read_text().splitlines()]
    assert ticks == list(range(len(ticks)))
    rt.kill_container(cid, signal.SIGKILL)
    status = rt.wait_container(cid, 10)
    assert (status.state, status.reason) == ("exited", "Unknown")
    for c in (cid, finished):
        remove_and_check(rt, c)


def test_bad_specs_are_refused_before_anything_runs(runtime: ContainerRuntime) -> None:
    with pytest.raises(ContainerError, match="not found"):
        runtime.create_container(ContainerSpec(name="x", image="nosuchimage:1"))
    with pytest.raises(ContainerError, match="unknown capability"):
        runtime.create_container(ContainerSpec(name="x", image="busybox", capabilities_add=["FLY"]))
    with pytest.raises(ContainerError, match="invalid mount"):
        runtime.create_container(
            ContainerSpec(name="x", image="busybox", mounts=[Mount("relative", source="/tmp")])
        )
    assert runtime.list_containers() == []
    assert json.loads((runtime.images.root / "index.json").read_text())["manifests"]


def read_all(session, timeout: float = 10.0) -> dict[str, bytes]:
    out = {"stdout": b"", "stderr": b""}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = session.read(timeout=max(0.1, deadline - time.monotonic()))
        if item is None:
            return out
        out[item[0]] += item[1]
    raise AssertionError(f"container did not exit; got {out}")


def test_attach_with_stdin(runtime: ContainerRuntime) -> None:
    cid = runtime.run(
        ContainerSpec(
            name="att",
            image="busybox",
            stdin=True,
            command=["sh", "-c", "read line; echo got $line; echo err >&2; cat; echo eof"],
        )
    )
    session = runtime.attach(cid)
    assert session.stdin and not session.tty
    session.write(b"hello\n")
    session.write(b"more\n")
    session.close_stdin()
    out = read_all(session)
    session.close()
    assert out == {"stdout": b"got hello\nmore\neof\n", "stderr": b"err\n"}
    assert session.exit_state["exit_code"] == 0
    logged = [
        LOG_LINE.match(line)
        for line in Path(runtime.container_status(cid).log_path).read_text().splitlines()
    ]
    assert [m[4] for m in logged if m[2] == "stdout"] == [
        "got hello",
        "more",
        "eof",
    ]  # attach also logs
    assert [m[4] for m in logged if m[2] == "stderr"] == ["err"]
    remove_and_check(runtime, cid)


def test_attach_to_a_tty_container_and_resize(runtime: ContainerRuntime) -> None:
    cid = runtime.run(
        ContainerSpec(name="tty-att", image="busybox", stdin=True, tty=True, command=["sh"])
    )
    session = runtime.attach(cid)
    assert session.tty
    session.resize(33, 120)
    session.write(b"stty size; exit 6\n")
    out = read_all(session)
    session.close()
    assert b"33 120" in out["stdout"] and out["stderr"] == b""
    assert runtime.container_status(cid).exit_code == 6
    remove_and_check(runtime, cid)


def test_attach_to_a_stopped_container_is_refused(runtime: ContainerRuntime) -> None:
    cid = runtime.run(ContainerSpec(name="gone", image="busybox", command=["true"]))
    runtime.wait_container(cid, 10)
    with pytest.raises(ContainerError, match="not running"):
        runtime.attach(cid)
    remove_and_check(runtime, cid)


def test_host_network_sandbox_uses_the_node_namespaces(runtime: ContainerRuntime) -> None:
    sandbox = runtime.create_sandbox(SandboxSpec(name="hostnet", host_network=True))
    assert sandbox.netns_path == "" and sandbox.utsns_path == "" and sandbox.ipcns_path
    cid = runtime.run(
        ContainerSpec(name="hn", image="busybox", command=["sleep", "60"], sandbox_id=sandbox.id)
    )
    view = runtime.exec_sync(
        cid, ["sh", "-c", "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts"]
    )
    hostname, net, uts = view.stdout.decode().split()
    assert hostname == os.uname().nodename
    assert net == os.readlink("/proc/self/ns/net") and uts == os.readlink("/proc/self/ns/uts")
    remove_and_check(runtime, cid)
    runtime.remove_sandbox(sandbox.id)
    assert not [m for m in supervisor_mounts(runtime) if sandbox.id in m]


def test_volumes_mounted_after_start_up_are_visible(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    # Like a kubelet mounting a secret tmpfs just before starting a container: the mount is made
    # (in the supervisor's mount namespace) after the supervisor pre-forked its zygotes.
    volume = tmp_path / "secret-volume"
    volume.mkdir()
    supervisor = str(runtime.supervisor_pid())
    script = f"mount -t tmpfs tmpfs {volume} && echo s3cret > {volume}/token"
    subprocess.run(["nsenter", "-t", supervisor, "-m", "sh", "-c", script], check=True, timeout=30)
    try:
        _, _, lines, _ = run_to_exit(
            runtime,
            "cat /var/run/secret/token",
            mounts=[Mount("/var/run/secret", source=str(volume), readonly=True)],
        )
        assert stdout_of(lines) == ["s3cret"]
    finally:
        subprocess.run(
            ["nsenter", "-t", supervisor, "-m", "umount", str(volume)], check=True, timeout=30
        )


def test_start_falls_back_when_pre_forked_zygotes_die(own_runtime: ContainerRuntime) -> None:
    import psutil

    rt = own_runtime
    supervisor = psutil.Process(rt.supervisor_pid())
    assert wait_for(lambda: len(supervisor.children()) >= 1)
    for zygote in supervisor.children():
        zygote.kill()
    code, reason, lines, _ = run_to_exit(rt, "echo still-works")
    assert (code, reason, stdout_of(lines)) == (0, "Completed", ["still-works"])
    if not Cgroup(rt.cgroup_parent, "x").v2:  # zygotes exist only where cgroups can be renamed
        assert "unusable, discarded" in (rt.data_dir / "supervisor.log").read_text()


def test_image_with_many_layers(
    runtime: ContainerRuntime, test_images: Path, tmp_path: Path
) -> None:
    import tarfile

    from imagebuilder import Entry, busybox_layer, layer_tar, write_oci_archive

    layers = [busybox_layer()] + [
        layer_tar(
            [Entry("layers", tarfile.DIRTYPE, mode=0o755), Entry(f"layers/{n:02d}", data=b"")]
        )
        for n in range(40)
    ]
    archive = tmp_path / "many.tar"
    write_oci_archive(archive, layers, "docker.io/library/many:1")
    import_archive(runtime.images, archive)
    assert (
        len(runtime.images.get("many:1").layers) == 41
    )  # absolute lower dirs would not fit a page
    cid = runtime.run(
        ContainerSpec(name="many", image="many:1", command=["sh", "-c", "ls /layers | wc -l"])
    )
    status = runtime.wait_container(cid, 30)
    assert status.exit_code == 0, status.message
    assert LOG_LINE.match(Path(status.log_path).read_text().splitlines()[0])[4].strip() == "40"
    remove_and_check(runtime, cid)
    runtime.images.remove("many:1")


def test_supervisor_survives_bad_requests(runtime: ContainerRuntime) -> None:
    import socket

    for payload in (
        b"not json\n",
        b'{"op": "nosuch"}\n',
        b'{"op": "start"}\n',
        b'{"op": "kill", "id": "x"}\n',
        b"\n",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(runtime.socket_path)
            sock.sendall(payload)
            reply = json.loads(sock.makefile("rb").readline())
            assert "error" in reply, payload
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(runtime.socket_path)  # and one that hangs up without a word
    code, _, _, _ = run_to_exit(runtime, "exit 0")
    assert code == 0


def test_prune_keeps_layers_of_existing_containers(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    from imagebuilder import Entry, busybox_layer, layer_tar, write_docker_archive

    archive = tmp_path / "keep.tar"
    write_docker_archive(
        archive, [busybox_layer(), layer_tar([Entry("kept", data=b"yes\n")])], ["localhost/keep:1"]
    )
    [image] = import_archive(runtime.images, archive)
    cid = runtime.create_container(
        ContainerSpec(name="keep", image="localhost/keep:1", command=["cat", "/kept"])
    )
    runtime.images.remove("localhost/keep:1")
    runtime.images.prune(runtime.layers_in_use)
    own_layer = runtime.images.layer_dir(image.diff_ids[1])
    assert own_layer.is_dir()  # the image is gone, its layer stays while a container uses it
    runtime.start_container(cid)
    status = runtime.wait_container(cid, 30)
    assert status.exit_code == 0 and Path(status.log_path).read_text().endswith("stdout F yes\n")
    remove_and_check(runtime, cid)
    runtime.images.prune(runtime.layers_in_use)
    assert not own_layer.exists()
    assert runtime.images.get("busybox")  # shared layers of named images are untouched
    assert runtime.images.layer_dir(image.diff_ids[0]).is_dir()


def test_oom_score_adj(runtime: ContainerRuntime) -> None:
    supervisor = runtime.supervisor_pid()
    lowering_allowed = (
        "does not let us lower" not in (runtime.data_dir / "supervisor.log").read_text()
    )
    expected = "-999" if lowering_allowed else "0"  # some sandboxes refuse lowering even to root
    assert Path(f"/proc/{supervisor}/oom_score_adj").read_text().strip() == expected
    _, _, lines, _ = run_to_exit(runtime, "cat /proc/self/oom_score_adj")
    assert stdout_of(lines) == ["0"]  # not the supervisor's shield
    _, _, lines, _ = run_to_exit(runtime, "cat /proc/self/oom_score_adj", oom_score_adj=1000)
    assert stdout_of(lines) == ["1000"]
    cid = runtime.run(
        ContainerSpec(name="oomadj", image="busybox", command=["sleep", "60"], oom_score_adj=500)
    )
    assert runtime.exec_sync(cid, ["cat", "/proc/self/oom_score_adj"]).stdout == b"500\n"
    remove_and_check(runtime, cid)


def test_outdated_supervisor_is_replaced_only_when_idle(
    own_runtime: ContainerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from k3py.runtime import supervisor as supervisor_module

    rt = own_runtime
    first = rt.supervisor_pid()
    cid = rt.run(ContainerSpec(name="busy", image="busybox", command=["sleep", "60"]))
    # Pretend k3py was upgraded: this client's supervisor code differs from the running one's.
    monkeypatch.setattr(supervisor_module, "code_version", lambda: "0" * 16)
    upgraded = ContainerRuntime(rt.data_dir, cgroup_parent=rt.cgroup_parent, isolate_mounts=True)
    assert upgraded.ensure_supervisor() == first  # it owns a container: kept
    assert upgraded.container_status(cid).state == "running"
    upgraded.stop_container(cid, timeout=0)
    remove_and_check(upgraded, cid)
    again = ContainerRuntime(rt.data_dir, cgroup_parent=rt.cgroup_parent, isolate_mounts=True)
    second = again.ensure_supervisor()  # idle now: replaced by one running this code
    assert second != first and is_zombie(first)  # gone (or exited, awaiting its reaper)


def test_containers_in_a_parent_group_go_with_it(runtime: ContainerRuntime) -> None:
    """A pod's group (``ensure_cgroup``) holds its containers, keeps its own limits, and is
    removed with its last container, up through the QoS class's group."""
    pod_group = "kubepods/burstable/pod-a"
    runtime.ensure_cgroup("kubepods/burstable", Resources(cpu_shares=1024))
    runtime.ensure_cgroup(pod_group, Resources(cpu_shares=300, memory_limit=96 << 20))
    spec = ContainerSpec(name="in-pod", image="busybox", command=["sleep", "60"], cgroup_parent=pod_group)
    first, second = runtime.run(spec), runtime.run(spec)
    parent = Cgroup(runtime.cgroup_parent, pod_group)
    for cid in (first, second):
        group = Cgroup(f"{runtime.cgroup_parent}/{pod_group}", cid)
        procs = Path(group.dirs["" if group.v2 else "memory"], "cgroup.procs").read_text().split()
        assert str(runtime.container_status(cid).pid) in procs
    if parent.v2:
        assert Path(parent.dirs[""], "memory.max").read_text().strip() == str(96 << 20)
    else:
        assert Path(parent.dirs["memory"], "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert Path(parent.dirs["cpu"], "cpu.shares").read_text().strip() == "300"
    # Zygotes that moved into the pod's group left no pool groups behind.
    top = Cgroup(runtime.cgroup_parent, "")
    pools = [n for n in os.listdir(next(iter(top.dirs.values()))) if n.startswith("pool-")]
    assert len(pools) <= 2, pools
    runtime.remove_container(first, force=True)
    assert parent.exists()  # the second container still lives in it
    runtime.remove_container(second, force=True)
    assert not parent.exists() and not Cgroup(runtime.cgroup_parent, "kubepods").exists()
    for bad in ("../escape", "/absolute", "a//b"):
        with pytest.raises(ContainerError, match="relative path below"):
            runtime.create_container(ContainerSpec(name="x", image="busybox", command=["true"], cgroup_parent=bad))
        with pytest.raises(ContainerError, match="relative path below"):
            runtime.ensure_cgroup(bad, Resources())
