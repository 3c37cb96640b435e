"""The device allowlist of a container: which device nodes its processes may open.

Without it a root container with CAP_MKNOD could ``mknod /tmp/kvm c 10 232`` (or the host's
disk) and open it. As runc does, each container's own cgroup gets an allowlist:

- creating any character or block node is allowed (``c *:* m``, ``b *:* m``: images and
  programs make nodes; making one grants nothing);
- reading and writing only the harmless ones: null, zero, full, random, urandom, tty, console,
  ptmx and the pty slaves (136:*), plus fuse (10:229) when a container asks for it;
- a privileged container gets every device its parent group allows (no rules of its own).

Rules are strings in the cgroup v1 ``devices.allow`` syntax (``"c 1:3 rwm"``). They are put in
force in two ways, by the cgroup code (``cgroups.Cgroup.restrict_devices``):

- cgroup v1: ``a`` is written to the group's ``devices.deny`` (deny everything), then each rule
  to ``devices.allow``. A v1 device group can never allow more than its parent; the groups
  above a container (the runtime's parent, kubepods, the QoS and pod groups) are made with
  ``mkdir`` and so inherit their parent's list (everything, on a normal host), which lets the
  container's group narrow it;
- cgroup v2 has no device controller: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program is attached to
  the group (``bpf(BPF_PROG_ATTACH)``, ``BPF_F_ALLOW_MULTI`` so programs that systemd or an
  outer runtime attached to ancestors keep applying as well — the kernel runs them all and any
  refusal wins). We generate the program here: for each access the kernel passes
  ``(access_type, major, minor)``; the program tries each rule in turn (type, then the access
  bits being a subset of the rule's, then major and minor unless wildcards) and returns 1
  (allow) at the first match, 0 (EPERM) when none matches. One loaded program serves every
  container with the same rules (the descriptor is cached per process).

Both are in force before the container's init execs its program and for everything that joins
the group later (exec sessions): the group is restricted before any process of the container
is handed its config.

Only the standard library is imported (``ctypes``, ``os``, ``struct``): the lean supervisor
loads this module.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# runc's and containerd's default allowlist (mknod of anything; rw of the harmless nodes).
DEFAULT_RULES = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # /dev/null
    "c 1:5 rwm",  # /dev/zero
    "c 1:7 rwm",  # /dev/full
    "c 1:8 rwm",  # /dev/random
    "c 1:9 rwm",  # /dev/urandom
    "c 5:0 rwm",  # /dev/tty
    "c 5:1 rwm",  # /dev/console
    "c 5:2 rwm",  # /dev/ptmx
    "c 136:* rwm",  # /dev/pts/N
)
FUSE_RULE = "c 10:229 rwm"  # /dev/fuse, only for containers that ask for it

WILDCARD = -1
_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
_TYPE_BITS = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, _CHAR


class DeviceRuleError(ValueError):
    pass


def container_rules(privileged: bool, fuse: bool = False) -> list[str] | None:
    """The allowlist of a container; None for a privileged one (no restriction of its own)."""
    if privileged:
        return None
    return [*DEFAULT_RULES, FUSE_RULE] if fuse else list(DEFAULT_RULES)


def parse_rule(rule: str) -> tuple[str, int, int, int]:
    """``"c 1:3 rwm"`` → ("c", 1, 3, access bits); ``*`` is WILDCARD. Type ``a`` is refused:
    an allowlist names device kinds."""
    try:
        kind, numbers, access = rule.split()
        major_text, minor_text = numbers.split(":")
        major = WILDCARD if major_text == "*" else int(major_text)
        minor = WILDCARD if minor_text == "*" else int(minor_text)
    except ValueError:
        raise DeviceRuleError(f"malformed device rule {rule!r}") from None
    if kind not in _TYPE_BITS:
        raise DeviceRuleError(f"device rule {rule!r}: type must be c or b")
    if not access or any(a not in _ACCESS_BITS for a in access):
        raise DeviceRuleError(f"device rule {rule!r}: access must be letters of rwm")
    if not (WILDCARD <= major < 1 << 31 and WILDCARD <= minor < 1 << 31):
        raise DeviceRuleError(f"device rule {rule!r}: number out of range")
    bits = 0
    for letter in access:
        bits |= _ACCESS_BITS[letter]
    return kind, major, minor, bits


# ---- cgroup v1 --------------------------------------------------------------------------------


def apply_v1(directory: str, rules: list[str]) -> None:
    """Replace the v1 device list of the group ``directory`` by ``rules`` (deny all, allow each).

    One write per rule (the kernel parses one rule per write), on one open descriptor each.
    """
    for rule in rules:
        parse_rule(rule)  # nothing is written unless every rule is valid
    fd = os.open(os.path.join(directory, "devices.deny"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"a")
    finally:
        os.close(fd)
    fd = os.open(os.path.join(directory, "devices.allow"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        for rule in rules:
            os.write(fd, rule.encode())
    finally:
        os.close(fd)


# ---- cgroup v2: the eBPF program --------------------------------------------------------------

# Instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54
_ALU32_RSH_K = 0x74
_ALU32_MOV_K = 0xB4
_ALU32_MOV_X = 0xBC
_JMP_JNE_K = 0x55
_JMP_JNE_X = 0x5D
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction: opcode, dst/src registers (4 bits each), 16-bit offset, 32-bit imm."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def compile_program(rules: list[str]) -> bytes:
    """The eBPF device program for an allowlist (default deny), as raw instructions.

    Registers: r1 = the context (u32 access_type, u32 major, u32 minor); r2 = device type (low
    16 bits of access_type); r3 = requested access (high 16 bits); r4 = major; r5 = minor.
    Each rule is a block whose tests jump to the next block on mismatch; a block that falls
    through returns 1. The final block returns 0.
    """
    blocks: list[list[tuple[int, int, int, int, int | None]]] = []
    for rule in rules:
        kind, major, minor, access = parse_rule(rule)
        block: list[tuple[int, int, int, int, int | None]] = []
        # (code, dst, src, imm, jump-to-next?) — the jump offset is filled in below.
        block.append((_JMP_JNE_K, 2, 0, _TYPE_BITS[kind], 0))
        if access != 0b111:  # an "rwm" rule matches any access: no test needed
            block.append((_ALU32_MOV_X, 1, 3, 0, None))  # r1 = r3 (the context is read already)
            block.append((_ALU32_AND_K, 1, 0, access, None))  # r1 &= allowed
            block.append((_JMP_JNE_X, 1, 3, 0, 0))  # requested bits outside allowed: next
        if major != WILDCARD:
            block.append((_JMP_JNE_K, 4, 0, major, 0))
        if minor != WILDCARD:
            block.append((_JMP_JNE_K, 5, 0, minor, 0))
        block.append((_ALU32_MOV_K, 0, 0, 1, None))
        block.append((_EXIT, 0, 0, 0, None))
        blocks.append(block)
    program = [
        _insn(_LDX_MEM_W, 2, 1, 0),
        _insn(_ALU32_AND_K, 2, imm=0xFFFF),
        _insn(_LDX_MEM_W, 3, 1, 0),
        _insn(_ALU32_RSH_K, 3, imm=16),
        _insn(_LDX_MEM_W, 4, 1, 4),
        _insn(_LDX_MEM_W, 5, 1, 8),
    ]
    for block in blocks:
        for index, (code, dst, src, imm, jump) in enumerate(block):
            # A jump to the next block skips the rest of this one: off counts from the next insn.
            off = len(block) - index - 1 if jump is not None else 0
            program.append(_insn(code, dst, src, off, imm))
    program.append(_insn(_ALU32_MOV_K, 0, imm=0))
    program.append(_insn(_EXIT))
    return b"".join(program)


# bpf(2) commands, program and attach types, flags (linux/bpf.h).
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_LICENSE = b"Apache-2.0"

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_programs: dict[tuple[str, ...], int] = {}  # loaded programs by rule set (descriptors kept open)


def _bpf(command: int, attr: ctypes.Array, what: str) -> int:  # type: ignore[type-arg]
    """bpf(2) with ``attr`` (a ctypes buffer the kernel may write back into)."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(38, f"{what}: bpf(2) number unknown on {platform.machine()}")
    result = _libc.syscall(
        ctypes.c_long(number), ctypes.c_int(command), attr, ctypes.c_uint(len(attr))
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _attr(data: bytes) -> ctypes.Array:  # type: ignore[type-arg]
    return ctypes.create_string_buffer(data, len(data))


def load_program(rules: list[str]) -> int:
    """A descriptor of the loaded device program for ``rules`` (loaded once per process)."""
    key = tuple(rules)
    fd = _programs.get(key)
    if fd is not None:
        return fd
    code = compile_program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(_LICENSE)
    log = ctypes.create_string_buffer(65536)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex,
    # expected_attach_type.
    attr = struct.pack(
        "<IIQQIIQII16sII",
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        b"k3py_devices",
        0,
        0,
    )
    try:
        fd = _bpf(_BPF_PROG_LOAD, _attr(attr), "load the device cgroup program")
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip()
        raise OSError(exc.errno, f"{exc.strerror}{': ' + detail if detail else ''}") from None
    os.set_inheritable(fd, False)
    _programs[key] = fd
    return fd


def attach_v2(directory: str, rules: list[str]) -> None:
    """Attach the device program for ``rules`` to the v2 group ``directory``."""
    program = load_program(rules)
    group = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd.
        attr = struct.pack("<IIIII", group, program, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0)
        _bpf(_BPF_PROG_ATTACH, _attr(attr), f"attach the device program to {directory}")
    finally:
        os.close(group)


def attached_v2(directory: str) -> list[int]:
    """The IDs of the device programs attached to the v2 group ``directory`` itself."""
    group = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = (ctypes.c_uint32 * 64)()
        # BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt.
        attr = _attr(struct.pack("<IIIIQII", group, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64, 0))
        _bpf(_BPF_PROG_QUERY, attr, f"query the device programs of {directory}")
        count = struct.unpack_from("<I", attr.raw, 24)[0]
        return list(ids[:count])
    finally:
        os.close(group)
