"""The device allowlist (issue #10): a container may create device nodes but open only the
harmless ones — null, zero, full, random, urandom, tty, console, ptmx, its ptys — and fuse when
it asks; a privileged one may open every device.

Attacks as a root container would try them: ``mknod`` of a host device (kvm, the host's disk)
and opening it, from the container's init and from an exec session, in a container started
from a pre-forked zygote (its pool group renamed) and in one that joins a pod's group. The
cgroup v2 path (a BPF device program) is checked on the host's cgroup2 hierarchy, which a
hybrid host mounts at /sys/fs/cgroup/unified.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import openable_host_block_device, openable_host_device
from test_runtime_containers import (
    make_runtime,
    remove_and_check,
    run_to_exit,
    stdout_of,
    tear_down,
    wait_for,
)

from k3py.runtime import devices
from k3py.runtime.cgroups import CGROUP_ROOT, Cgroup, is_v2
from k3py.runtime.containers import ContainerRuntime
from k3py.runtime.spec import ContainerSpec, Resources

DENIED = "Operation not permitted"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, test_images: Path) -> Iterator[ContainerRuntime]:
    rt = make_runtime(tmp_path_factory.mktemp("devices"), test_images)
    yield rt
    assert tear_down(rt) == [], "a test left containers behind"


@pytest.fixture
def own_runtime(tmp_path: Path, test_images: Path) -> Iterator[ContainerRuntime]:
    rt = make_runtime(tmp_path / "rt", test_images)
    yield rt
    tear_down(rt)


def open_script(path: str, mode: str = "<>") -> str:
    """sh that opens ``path`` (read-write by default) and prints ``<path> OPENED`` or the error."""
    return f"if (exec 3{mode}{path}) 2>/tmp/err; then echo '{path} OPENED'; else echo \"{path} $(cat /tmp/err)\"; fi"


def outcome(lines: list[str], path: str) -> str:
    return next(line for line in lines if line.startswith(path + " "))[len(path) + 1 :]


@pytest.mark.parametrize("placement", ["own group (zygote renamed)", "pod group (zygote joins)"])
def test_default_container_creates_but_cannot_open_host_devices(
    runtime: ContainerRuntime, tmp_path: Path, placement: str
) -> None:
    char = openable_host_device(tmp_path)
    block = openable_host_block_device(tmp_path)
    extra: dict = {}
    if placement.startswith("pod"):
        runtime.ensure_cgroup("kubepods/besteffort/pod-dev", Resources())
        extra["cgroup_parent"] = "kubepods/besteffort/pod-dev"
    script = "; ".join([
        f"mknod /tmp/host-char c {char[0]} {char[1]} && echo made-char",
        f"mknod /tmp/host-block b {block[0]} {block[1]} && echo made-block",
        open_script("/tmp/host-char"),
        open_script("/tmp/host-char", "<"),
        open_script("/tmp/host-block", "<"),
        # Allowed by number, wherever the node is: a null made by hand works like /dev/null.
        "mknod /tmp/my-null c 1 3 && echo via-my-null > /tmp/my-null && echo my-null-ok",
        "echo x > /dev/null && echo null-ok",
        "head -c 5 /dev/zero | wc -c",
        "head -c 6 /dev/urandom | wc -c",
        "head -c 7 /dev/random | wc -c",
        "(echo x > /dev/full) 2>&1 | grep -q 'No space left' && echo full-ok",
        open_script("/dev/ptmx"),
        "mknod /tmp/console c 5 1 && echo made-console",
    ])  # fmt: skip
    code, reason, lines, _ = run_to_exit(runtime, script, **extra)
    out = stdout_of(lines)
    assert (code, reason) == (0, "Completed"), lines
    assert {"made-char", "made-block", "my-null-ok", "null-ok", "5", "6", "7", "full-ok",
            "made-console"} <= set(out), out  # fmt: skip
    denied_char = [line for line in out if line.startswith("/tmp/host-char ") and DENIED in line]
    assert len(denied_char) == 2, out  # read-write and read-only
    assert DENIED in outcome(out, "/tmp/host-block"), out
    assert outcome(out, "/dev/ptmx") == "OPENED"
    if placement.startswith("pod"):
        runtime.remove_empty_cgroup("kubepods/besteffort/pod-dev")


def test_exec_sessions_are_confined_and_get_their_terminal(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    char = openable_host_device(tmp_path)
    cid = runtime.run(ContainerSpec(name="exec-dev", image="busybox", command=["sleep", "60"]))
    result = runtime.exec_sync(
        cid, ["sh", "-c", f"mknod /tmp/h c {char[0]} {char[1]}; {open_script('/tmp/h')}"]
    )
    assert DENIED in result.stdout.decode(), result
    session = runtime.exec(cid, ["sh"], tty=True)
    os.write(session.stdout, f"{open_script('/dev/tty')}; tty; {open_script('/tmp/h')}; exit\n".encode())
    output = b""
    while True:
        try:
            chunk = os.read(session.stdout, 4096)
        except OSError:  # EIO once the shell has exited
            break
        if not chunk:
            break
        output += chunk
    assert session.wait(10) == 0
    session.close()
    text = output.decode()
    assert "/dev/tty OPENED" in text and "/dev/pts/" in text, text
    assert f"/tmp/h sh: can't create /tmp/h: {DENIED}" in text, text
    remove_and_check(runtime, cid)


def test_privileged_gets_every_device_and_fuse_only_when_asked(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    char = openable_host_device(tmp_path, exclude=(10, 229))
    make = f"mknod /tmp/h c {char[0]} {char[1]}; mknod /tmp/fuse c 10 229"
    probe = f"{make}; {open_script('/tmp/h')}; {open_script('/tmp/fuse')}"
    _, _, lines, _ = run_to_exit(runtime, probe, privileged=True)
    assert outcome(stdout_of(lines), "/tmp/h") == "OPENED", lines
    _, _, lines, _ = run_to_exit(runtime, probe)
    assert DENIED in outcome(stdout_of(lines), "/tmp/fuse"), lines
    _, _, lines, _ = run_to_exit(runtime, probe, fuse_device=True)
    out = stdout_of(lines)
    assert DENIED not in outcome(out, "/tmp/fuse"), out  # asked for: opened (or no fuse here)
    assert DENIED in outcome(out, "/tmp/h"), out  # fuse grants nothing else

    cid = runtime.run(ContainerSpec(name="list", image="busybox", command=["sleep", "60"], fuse_device=True))
    group = Cgroup(runtime.cgroup_parent, cid)
    if not group.v2:
        listed = Path(group.dirs["devices"], "devices.list").read_text().split("\n")
        assert [rule for rule in listed if rule] == [*devices.DEFAULT_RULES, devices.FUSE_RULE]
    else:
        assert len(devices.attached_v2(group.dirs[""])) == 1
    remove_and_check(runtime, cid)


PROBE = """
import json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write("0")
result = {}
for path, flags in json.loads(sys.argv[2]):
    try:
        os.close(os.open(path, flags))
        result[f"{path} {flags}"] = "ok"
    except OSError as exc:
        result[f"{path} {flags}"] = os.strerror(exc.errno)
print(json.dumps(result))
"""


def v2_root() -> str:
    """A cgroup2 hierarchy: the host's only one, or the unified one a hybrid host mounts."""
    root = CGROUP_ROOT if is_v2() else os.path.join(CGROUP_ROOT, "unified")
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if " cgroup2 " in line]
    assert root in mounts, f"no cgroup2 hierarchy at {root} (mounted: {mounts})"
    return root


def probe_in(directory: str, opens: list[tuple[str, int]]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, directory, json.dumps(opens)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_cgroup_v2_device_program_allows_only_the_list(tmp_path: Path) -> None:
    root = v2_root()
    char = openable_host_device(tmp_path)
    host_node = tmp_path / "host-char"
    os.mknod(host_node, 0o600 | 0o020000, os.makedev(*char))
    parent = f"k3py-devtest-{secrets.token_hex(4)}"
    default = Cgroup(parent, "default", root=root)
    read_only_null = Cgroup(parent, "null-read-only", root=root)
    try:
        for group, rules in ((default, devices.container_rules(False)), (read_only_null, ["c 1:3 r"])):
            group.create({})
            group.restrict_devices(rules)
            assert len(devices.attached_v2(group.dirs[""])) == 1
        rw, ro, wo = os.O_RDWR, os.O_RDONLY, os.O_WRONLY
        opens = [("/dev/null", rw), ("/dev/zero", rw), ("/dev/urandom", ro), (str(host_node), rw),
                 (str(host_node), ro), ("/dev/null", wo)]  # fmt: skip
        assert probe_in(default.dirs[""], opens) == {
            "/dev/null 2": "ok", "/dev/zero 2": "ok", "/dev/urandom 0": "ok",
            f"{host_node} 2": DENIED, f"{host_node} 0": DENIED, "/dev/null 1": "ok",
        }  # fmt: skip
        # Access bits are checked too: a read-only rule refuses writing, other devices entirely.
        assert probe_in(read_only_null.dirs[""], opens) == {
            "/dev/null 2": DENIED, "/dev/zero 2": DENIED, "/dev/urandom 0": DENIED,
            f"{host_node} 2": DENIED, f"{host_node} 0": DENIED, "/dev/null 1": DENIED,
        }  # fmt: skip
        assert probe_in(read_only_null.dirs[""], [("/dev/null", ro)]) == {"/dev/null 0": "ok"}
    finally:
        for group in (default, read_only_null):
            group.remove()
        os.rmdir(os.path.join(root, parent))


def test_device_rules_fail_closed(tmp_path: Path) -> None:
    """No devices controller (here: a plain directory posing as the cgroup root) means no
    container rather than an unconfined one; malformed rules are refused before any write."""
    fake_root = tmp_path / "cgroup"
    (fake_root / "memory").mkdir(parents=True)
    group = Cgroup("k3py-x", "c", root=str(fake_root))
    with pytest.raises(OSError, match="no cgroup v1 devices controller"):
        group.restrict_devices(devices.container_rules(False))
    group.restrict_devices(None)  # privileged: nothing to restrict
    for bad in ("a *:* rwm", "c 1:3", "c x:3 rw", "c 1:3 rwx", "c 1:3 "):
        with pytest.raises(devices.DeviceRuleError):
            devices.compile_program([bad])


def test_adopted_container_of_an_older_k3py_is_confined(
    own_runtime: ContainerRuntime, tmp_path: Path
) -> None:
    """A container an older k3py started has no device group; the supervisor that adopts it
    puts it (and so its exec sessions) under the allowlist."""
    rt = own_runtime
    char = openable_host_device(tmp_path)
    cid = rt.run(ContainerSpec(name="legacy", image="busybox", command=["sleep", "60"]))
    pid = rt.container_status(cid).pid
    group = Cgroup(rt.cgroup_parent, cid)
    if group.v2:
        pytest.fail("this check is written for cgroup v1 hosts (a v2 group keeps its program)")
    os.kill(rt.supervisor_pid(), signal.SIGKILL)  # type: ignore[arg-type]
    assert wait_for(lambda: rt.supervisor_pid() is None)
    # What an older k3py left: the container in its parent's device group, no rules recorded.
    parent_devices = os.path.dirname(group.dirs["devices"])
    Path(parent_devices, "cgroup.procs").write_text(str(pid))
    os.rmdir(group.dirs["devices"])
    config_path = rt.containers_dir / cid / "config.json"
    config = json.loads(config_path.read_text())
    del config["cgroup"]["devices"]
    config_path.write_text(json.dumps(config))
    rt.ensure_supervisor()
    assert f"devices:/{group.relative}" in Path(f"/proc/{pid}/cgroup").read_text()
    listed = Path(group.dirs["devices"], "devices.list").read_text().split("\n")
    assert [rule for rule in listed if rule] == list(devices.DEFAULT_RULES)
    result = rt.exec_sync(cid, ["sh", "-c", f"mknod /tmp/h c {char[0]} {char[1]}; {open_script('/tmp/h')}"])
    assert DENIED in result.stdout.decode(), result
    assert json.loads(config_path.read_text())["cgroup"]["devices"] == list(devices.DEFAULT_RULES)
    rt.kill_container(cid, signal.SIGKILL)
    rt.wait_container(cid, 10)
    remove_and_check(rt, cid)


def test_container_from_an_image_with_device_nodes(runtime: ContainerRuntime, tmp_path: Path) -> None:
    """An image whose layer carries device nodes imports and runs; its nodes obey the allowlist
    like any other: its null works, its node of a host device cannot be opened."""
    import tarfile

    from imagebuilder import Entry, busybox_layer, layer_tar, write_oci_archive

    from k3py.runtime.archive import import_archive

    char = openable_host_device(tmp_path)
    nodes = layer_tar([
        Entry("nodes", tarfile.DIRTYPE, mode=0o755),
        Entry("nodes/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("nodes/host", tarfile.CHRTYPE, mode=0o666, devmajor=char[0], devminor=char[1]),
        Entry("dev", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/console", tarfile.CHRTYPE, mode=0o600, devmajor=5, devminor=1),
    ])  # fmt: skip
    archive = tmp_path / "with-nodes.tar"
    write_oci_archive(archive, [busybox_layer(), nodes], "docker.io/library/with-nodes:1")
    import_archive(runtime.images, archive)
    script = f"echo hi > /nodes/null && echo null-ok; {open_script('/nodes/host')}; ls /nodes"
    cid = runtime.run(ContainerSpec(name="nodes", image="with-nodes:1", command=["sh", "-c", script]))
    status = runtime.wait_container(cid, 30)
    out = [line.split(" ", 3)[3] for line in Path(status.log_path).read_text().splitlines()]
    assert status.exit_code == 0, out
    assert "null-ok" in out and DENIED in outcome(out, "/nodes/host"), out
    remove_and_check(runtime, cid)
    runtime.images.remove("with-nodes:1")


FAKE_OLD_SUPERVISOR = """
import json, os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
print("listening", flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(65536)
    # What a supervisor from before device isolation answers: no "features", a container.
    conn.sendall(json.dumps({"ok": True, "pid": os.getpid(), "running": [sys.argv[2]],
                             "version": "0" * 16}).encode() + b"\\n")
    conn.close()
"""


def test_busy_supervisor_from_before_device_isolation_is_replaced(
    tmp_path: Path, test_images: Path
) -> None:
    """An upgraded agent finds a supervisor that starts containers without device rules and,
    owning containers, would never become idle: it is replaced at once, and its containers are
    adopted and confined by the new one."""
    from k3py.runtime.archive import import_archive

    rt = ContainerRuntime(tmp_path / "rt")  # the host's mount namespace, as a real agent's
    import_archive(rt.images, test_images / "busybox-oci.tar")
    char = openable_host_device(tmp_path)
    fake = None
    try:
        cid = rt.run(ContainerSpec(name="old", image="busybox", command=["sleep", "120"]))
        pid = rt.container_status(cid).pid
        os.kill(rt.supervisor_pid(), signal.SIGKILL)  # type: ignore[arg-type]
        assert wait_for(lambda: rt.supervisor_pid() is None)
        group = Cgroup(rt.cgroup_parent, cid)
        if not group.v2:  # what the old k3py left: no device group, no rules in the config
            Path(os.path.dirname(group.dirs["devices"]), "cgroup.procs").write_text(str(pid))
            os.rmdir(group.dirs["devices"])
        config_path = rt.containers_dir / cid / "config.json"
        config = json.loads(config_path.read_text())
        del config["cgroup"]["devices"]
        config_path.write_text(json.dumps(config))
        os.unlink(rt.socket_path)
        fake = subprocess.Popen([sys.executable, "-S", "-c", FAKE_OLD_SUPERVISOR, rt.socket_path, cid],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert fake.stdout is not None and fake.stdout.readline() == "listening\n"
        upgraded = ContainerRuntime(rt.data_dir)
        new = upgraded.ensure_supervisor()
        assert fake.wait(10) == -signal.SIGTERM  # asked to go, not killed
        assert new != fake.pid and upgraded.container_status(cid).state == "running"
        result = upgraded.exec_sync(cid, ["sh", "-c", f"mknod /tmp/h c {char[0]} {char[1]}; {open_script('/tmp/h')}"])
        assert DENIED in result.stdout.decode(), result
    finally:
        if fake is not None and fake.poll() is None:
            fake.kill()
            fake.wait()
        for status in rt.list_containers():
            rt.remove_container(status.id, force=True)
        rt.shutdown_supervisor(force=True)
        assert rt.remove_cgroup_parent()
