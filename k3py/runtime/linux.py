"""Thin ctypes bindings for the Linux calls Python 3.11 lacks: namespaces, mounts, capabilities.

Only the standard library is imported (``ctypes``, ``os``) because the lean supervisor process
loads this module; every wrapper raises ``OSError`` with errno and the call's arguments, so a
failure in container set-up says exactly which step failed.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

# Loaded by name rather than via ctypes.util, which pulls in subprocess and shutil.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Capability numbers (linux/capability.h).
CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _shorten(text: str | None, limit: int = 160) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "..."


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(
    source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target} ({fstype}, flags {flags:#x}, {_shorten(data)})",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(
        _libc.syscall(
            ctypes.c_long(155), new_root.encode(), put_old.encode()
        ),  # SYS_pivot_root x86_64
        f"pivot_root({new_root})",
    )


def prctl(option: int, arg2: int = 0) -> None:
    _check(
        _libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg2),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        f"prctl({option}, {arg2})",
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def capability_mask(names: list[str]) -> int:
    """The bit mask of capability names ("NET_ADMIN" or "CAP_NET_ADMIN"; "ALL" for every one)."""
    mask = 0
    for name in names:
        key = name.upper().removeprefix("CAP_")
        if key == "ALL":
            return (1 << (last_cap() + 1)) - 1
        if key not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}")
        mask |= 1 << CAPABILITIES[key]
    return mask


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A duplicate of another process's descriptor (Linux 5.6+; close-on-exec)."""
    return _check(
        _libc.syscall(
            ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(target_fd), ctypes.c_uint(0)
        ),
        f"pidfd_getfd({target_fd})",
    )


PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """The name ``ps -o comm`` and ``top`` show (15 bytes at most)."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), buffer, 0, 0, 0), "prctl(PR_SET_NAME)")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name})")


def bring_loopback_up() -> None:
    """Set IFF_UP on ``lo`` in the current network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, 0x8913, ifreq))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, b""))


TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
DEVPTS_SUPER_MAGIC = 0x1CD1
_PTMX_RDEV = os.makedev(5, 2)


def open_pty_in(pid: int) -> tuple[int, int]:
    """A (master, slave) pty pair from the devpts instance of process ``pid``'s /dev/pts.

    A terminal for ``exec -t`` must come from the container's own devpts: a slave of the
    host's instance is a device the container cannot name, so ``tty``/ttyname() there print
    "not a tty". The container owns that path, so the open refuses symlinks and anything but
    the ptmx character device, and the slave is opened from the master (TIOCGPTPEER), never by
    a path the container could swap. Raises OSError when the container has no usable devpts.
    """
    flags = os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    master = os.open(f"/proc/{pid}/root/dev/pts/ptmx", flags)
    try:
        info = os.fstat(master)
        if not (info.st_mode & 0o170000 == 0o020000 and info.st_rdev == _PTMX_RDEV):
            raise OSError(f"/proc/{pid}/root/dev/pts/ptmx is not the ptmx device")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        os.set_blocking(master, True)
        return master, slave
    except BaseException:
        os.close(master)
        raise


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_mode_filter(program: bytes, flags: int = 0) -> None:
    """Install a seccomp BPF program (``struct sock_filter[]``) on this thread; the caller must
    have set no_new_privs or hold CAP_SYS_ADMIN. Without flags, prctl needs no syscall number."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if not flags:
        result = _libc.prctl(
            ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog),
            ctypes.c_ulong(0), ctypes.c_ulong(0),
        )  # fmt: skip
    else:
        number = _SECCOMP_SYSCALL.get(os.uname().machine)
        if number is None:
            raise OSError(f"seccomp filter flags are not supported on {os.uname().machine}")
        result = _libc.syscall(
            ctypes.c_long(number), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(flags),
            ctypes.byref(fprog),
        )  # fmt: skip
    _check(result, f"seccomp(SET_MODE_FILTER, flags {flags:#x}, {len(program) // 8} instructions)")
