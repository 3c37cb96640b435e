"""What runs in a freshly forked child to become a container process (or an exec'd process).

The supervisor forks, and the child calls ``become_container(config, ...)``, which never returns:
it either ``execve``s the container's entrypoint or writes one line of error to the error pipe
and exits 127. The steps, in order (the order matters):

1. new session, stdio in place, join cgroup (a tty container's stdio is a "console socket"
   until step 4: its terminal must come from its own devpts);
2. ``setns`` into the sandbox's namespaces (net, ipc, uts) and ``unshare`` the rest — the pid
   namespace was already unshared by the supervisor around ``fork`` so this child is pid 1
   (a hostPID container stays in the supervisor's, and its /proc shows the host's processes);
3. make every mount private, mount the overlay root (image layer dirs as lower dirs, a private
   upper dir), then proc, /dev (tmpfs with standard nodes, devpts with its own ptmx instance,
   shm, mqueue), sysfs read-only and the requested bind/tmpfs mounts — every mount target is
   resolved inside the new root (``secure_join``) so image symlinks cannot redirect a mount
   onto the host, and an ``exact_source`` (a subPath the kubelet checked) is bound through an
   O_PATH descriptor, refused if a component of it became a symlink since;
4. ``pivot_root`` into it and detach the old root; a tty container opens a pty pair from its
   /dev/pts/ptmx, hands the master to the supervisor over the console socket and makes the
   slave its stdio and controlling terminal (so ``tty`` names /dev/pts/0 there, which a pty
   from the host's devpts could not); mask and make read-only the sensitive /proc
   and /sys paths (unless privileged); remount / read-only if asked; set the hostname;
5. resolve the user in the container's /etc/passwd and /etc/group, drop the capability bounding
   set to the configured set, set no_new_privs, switch groups and user, set the capability sets;
6. restore default signal handling, install the seccomp filter (``config["seccomp"]``, compiled
   by the runtime at create, see ``seccomp``) and ``execvpe`` with the container's environment.
   Installing a filter needs no_new_privs or CAP_SYS_ADMIN: without no_new_privs it is
   installed in step 5 instead, between setgid and setuid, while we still hold
   CAP_SYS_ADMIN (runc's order), so setuid, capset and the exec run under it.

``exec_in_container`` does the same identity steps after ``setns`` into a running container.
Only the standard library is imported; this module is loaded by the lean supervisor.
"""

from __future__ import annotations

import binascii
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
import warnings  # noqa: F401 - os.execvpe imports it lazily, after pivot_root hides the stdlib

from k3py.runtime import linux
from k3py.runtime.cgroups import Cgroup

# containerd's default set for containers that are not privileged.
DEFAULT_CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
]  # fmt: skip
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEVICES = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
]
DEV_LINKS = [
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"),
]  # fmt: skip
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TIOCSCTTY = 0x540E
# Where a container keeps spare read ends of its own stdout/stderr pipes. They keep the pipes
# open if the supervisor dies (writes block instead of killing the container with SIGPIPE),
# and a new supervisor takes them back with pidfd_getfd to resume logging.
PARKED_OUTPUT_FDS = (1021, 1022)
_NS_FLAGS = {
    "net": linux.CLONE_NEWNET,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "pid": linux.CLONE_NEWPID,
    "mnt": linux.CLONE_NEWNS,
}


class InitError(Exception):
    """A container set-up step failed; the message names the step."""


def secure_join(root: str, path: str) -> str:
    """``root`` + ``path`` with every symlink resolved as if ``root`` were ``/`` (never escaping)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise InitError(f"too many symlinks resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _mount_point(root: str, destination: str, is_file: bool) -> str:
    target = secure_join(root, destination)
    if is_file:
        _mkdirs(os.path.dirname(target))
        if not os.path.exists(target):
            with open(target, "a"):
                pass
    else:
        _mkdirs(target)
    return target


def _setup_dev(root: str) -> None:
    dev = _mount_point(root, "/dev", False)
    nosuid, noexec, nodev = linux.MS_NOSUID, linux.MS_NOEXEC, linux.MS_NODEV
    linux.mount("tmpfs", dev, "tmpfs", nosuid | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod honours the umask
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))
    for sub in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, sub), 0o755)
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", nosuid | noexec,
                "newinstance,ptmxmode=0666,mode=0620,gid=5")  # fmt: skip
    linux.mount(
        "shm", os.path.join(dev, "shm"), "tmpfs", nosuid | noexec | nodev, "mode=1777,size=65536k"
    )
    linux.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", nosuid | noexec | nodev)


def _setup_rootfs(config: dict) -> str:
    rootfs = config["rootfs"]
    merged = rootfs["merged"]
    lowers = list(reversed(rootfs["layers"])) or [rootfs["empty"]]
    parents = {os.path.dirname(layer) for layer in lowers}
    if len(parents) == 1:
        # Mount options must fit in one page: name the layers relative to their common folder
        # (64 hex digits each) so images with many layers still mount.
        os.chdir(parents.pop())
        lowers = [os.path.basename(layer) for layer in lowers]
    options = f"lowerdir={':'.join(lowers)},upperdir={rootfs['upper']},workdir={rootfs['work']}"
    linux.mount("overlay", merged, "overlay", 0, options)
    flags = linux.MS_NOSUID | linux.MS_NOEXEC | linux.MS_NODEV
    linux.mount("proc", _mount_point(merged, "/proc", False), "proc", flags)
    _setup_dev(merged)
    sys_target = _mount_point(merged, "/sys", False)
    try:
        linux.mount("sysfs", sys_target, "sysfs", flags | linux.MS_RDONLY)
    except OSError:
        # A joined network namespace owned by another user namespace forbids a new sysfs;
        # a read-only bind of the host's is what runc falls back to as well.
        linux.mount("/sys", sys_target, None, linux.MS_BIND | linux.MS_REC)
        linux.mount("", sys_target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
    for m in sorted(config.get("mounts", []), key=lambda m: m["destination"].count("/")):
        readonly = bool(m.get("readonly"))
        if m.get("type") == "tmpfs":
            target = _mount_point(merged, m["destination"], False)
            data = "mode=1777" + (f",size={m['size']}" if m.get("size") else "")
            linux.mount(
                "tmpfs",
                target,
                "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV | (linux.MS_RDONLY if readonly else 0),
                data,
            )
            continue
        source = m["source"]
        if not os.path.exists(source):
            raise InitError(f"bind mount source {source} does not exist")
        if m.get("exact_source"):
            target = _bind_exact(source, merged, m["destination"])
        else:
            target = _mount_point(merged, m["destination"], not os.path.isdir(source))
            linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
        if readonly:
            linux.mount("", target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
    return merged


def _bind_exact(source: str, root: str, destination: str) -> str:
    """Bind ``source`` through an O_PATH descriptor whose path must still be ``source`` itself:
    had a component been swapped for a symlink after the kubelet resolved it, the descriptor
    would name somewhere else and the mount is refused (the subPath escape upstream guards)."""
    fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != source:
            raise InitError(f"bind mount source {source} changed since it was checked (a symlink?)")
        target = _mount_point(root, destination, not stat.S_ISDIR(os.fstat(fd).st_mode))
        linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND | linux.MS_REC)
    finally:
        os.close(fd)
    return target


def _pivot(root: str) -> None:
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the old root, now stacked on top of the new one
    os.chdir("/")


def _mask_paths() -> None:
    for path in MASKED_PATHS:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY, "size=0")
        else:
            linux.mount("/dev/null", path, None, linux.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(path, path, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 2]
    except OSError:
        return []


def resolve_user(user: str, extra_groups: list[int]) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for ``user`` (``name|uid[:group|gid]``) in this root."""
    name, _, group = (user or "0").partition(":")
    passwd = _read_db("/etc/passwd")
    entry = next((e for e in passwd if len(e) >= 6 and (e[0] == name or e[2] == name)), None)
    if entry is not None:
        uid, gid, home, username = int(entry[2]), int(entry[3]), entry[5], entry[0]
    elif name.isdigit():
        uid, gid, home, username = int(name), 0, "/", ""
    else:
        raise InitError(f"unable to find user {name}: no matching entries in passwd file")
    groups_db = _read_db("/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = next((g for g in groups_db if g[0] == group), None)
            if match is None:
                raise InitError(f"unable to find group {group}: no matching entries in group file")
            gid = int(match[2])
    supplementary = [gid]
    if username:
        for g in groups_db:
            if len(g) >= 4 and username in g[3].split(",") and g[2].isdigit():
                supplementary.append(int(g[2]))
    supplementary.extend(extra_groups)
    return uid, gid, sorted(set(supplementary)), home or "/"


def _permitted_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def _install_seccomp(seccomp: dict | None) -> None:
    """Install the container's compiled seccomp filter (``config["seccomp"]``, see containers)."""
    if seccomp:
        linux.seccomp_set_mode_filter(binascii.a2b_base64(seccomp["program"]), int(seccomp.get("flags", 0)))


def _apply_identity(
    process: dict, capabilities: int, no_new_privs: bool, seccomp: dict | None = None
) -> tuple[int, str]:
    # The supervisor shields itself from the OOM killer (-999); containers must not inherit that.
    # Best effort: some hosts (sandboxes) refuse any lowering of the score even to root.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(int(process.get("oom_score_adj", 0))))
    except PermissionError:
        pass
    capabilities &= _permitted_now()  # "all" means all this host lets us have
    uid, gid, groups, home = resolve_user(
        process.get("user", "0"), process.get("supplemental_groups", [])
    )
    cwd = process.get("cwd") or "/"
    if not os.path.isdir(cwd):
        os.makedirs(cwd, 0o755, exist_ok=True)  # as runc does, before dropping privileges
    for cap in range(linux.last_cap() + 1):
        if not capabilities & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups(groups)
    os.setgid(gid)
    if not no_new_privs:
        # Without no_new_privs the kernel takes a filter only from CAP_SYS_ADMIN, which setuid
        # may take away: install it now, so setuid, capset and the exec run under it (as runc).
        _install_seccomp(seccomp)
    os.setuid(uid)
    if uid == 0:
        linux.capset(capabilities, capabilities, 0)
    os.chdir(cwd)
    return uid, home


def _exec(process: dict, home: str, seccomp: dict | None = None) -> None:
    """execvpe the process; with no_new_privs set, ``seccomp`` is installed right before it."""
    env = {}
    for item in process.get("env", []):
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home)
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _install_seccomp(seccomp)  # the last step: the filter must (and does) allow execve
    args = process["args"]
    try:
        os.execvpe(args[0], args, env)
    except FileNotFoundError:
        raise InitError(f'exec: "{args[0]}": executable file not found in $PATH') from None
    except PermissionError:
        raise InitError(f'exec: "{args[0]}": permission denied') from None


def _stdio(stdio: list[int], tty: bool) -> None:
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    if tty:
        fcntl.ioctl(0, _TIOCSCTTY, 0)


def _console(console_socket: int) -> None:
    """Open this container's terminal in its own devpts and send the master to the supervisor."""
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, linux.TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, linux.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    sock = socket.socket(fileno=os.dup(console_socket))
    try:
        socket.send_fds(sock, [b"console"], [master])
    finally:
        sock.close()
        os.close(master)
    for target in range(3):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, _TIOCSCTTY, 0)


def _park(read_ends: list[int]) -> None:
    for fd, target in zip(read_ends, PARKED_OUTPUT_FDS, strict=False):
        try:
            os.dup2(fd, target, inheritable=True)
        except OSError:
            return  # a low descriptor limit: go without (only supervisor crashes need them)


def _fail(err_fd: int, exc: BaseException) -> None:
    message = str(exc) if isinstance(exc, InitError) else f"{type(exc).__name__}: {exc}"
    try:
        os.write(err_fd, message.encode()[:4000])
    finally:
        os._exit(127)


def become_container(
    config: dict,
    stdio: list[int],
    err_fd: int,
    join_cgroup: bool = True,
    parked: list[int] | None = None,
) -> None:
    """Turn this forked child into the container's pid 1 (never returns).

    ``join_cgroup=False`` is for zygotes, which joined their (renamed) cgroup in advance.
    """
    try:
        process = config["process"]
        tty = bool(process.get("tty"))
        _stdio(stdio, False)  # with a tty, fds 0-2 are the console socket until _console
        _park(parked or [])
        cg = config.get("cgroup")
        if cg and join_cgroup:
            Cgroup(cg["parent"], cg["name"]).join_self()
        namespaces = config.get("namespaces") or {}
        flags = linux.CLONE_NEWNS
        for kind in ("net", "ipc", "uts"):
            target = namespaces.get(kind)
            if target == "host":
                continue
            if target in (None, ""):
                if kind != "net":
                    flags |= _NS_FLAGS[kind]  # ipc and uts are private unless joined or "host"
                continue
            if target == "new":
                flags |= _NS_FLAGS[kind]
                continue
            fd = os.open(target, os.O_RDONLY)
            linux.setns(fd, _NS_FLAGS[kind])
            os.close(fd)
        linux.unshare(flags)
        if flags & linux.CLONE_NEWNET:
            linux.bring_loopback_up()
        linux.mount("", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        root = _setup_rootfs(config)
        _pivot(root)
        if tty:
            _console(0)
        if not config.get("privileged"):
            _mask_paths()
        if config.get("readonly_rootfs"):
            linux.mount("", "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
        if config.get("hostname") and flags & linux.CLONE_NEWUTS:
            linux.sethostname(config["hostname"])
        _enter_identity_and_exec(config, process)
    except BaseException as exc:
        _fail(err_fd, exc)


def _enter_identity_and_exec(config: dict, process: dict) -> None:
    no_new_privs = bool(config.get("no_new_privs"))
    seccomp = config.get("seccomp")
    _uid, home = _apply_identity(process, int(config["capabilities"]), no_new_privs, seccomp)
    _exec(process, home, seccomp if no_new_privs else None)


def exec_in_container(
    config: dict, ns_fds: dict[str, int], process: dict, stdio: list[int], err_fd: int
) -> None:
    """In a child already forked into the container's pid namespace: join it and exec (never returns)."""
    try:
        _stdio(stdio, bool(process.get("tty")))
        cg = config.get("cgroup")
        if cg:
            Cgroup(cg["parent"], cg["name"]).join_self()
        for kind in ("net", "ipc", "uts", "mnt"):
            if kind in ns_fds:
                linux.setns(ns_fds[kind], _NS_FLAGS[kind])
        os.chdir("/")
        _enter_identity_and_exec(config, process)  # under the container's seccomp filter too
    except BaseException as exc:
        _fail(err_fd, exc)


if __name__ == "__main__":  # pragma: no cover - not a program
    sys.exit("containerinit is a library used by the k3py supervisor")
