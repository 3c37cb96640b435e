"""Seccomp: the BPF compiler checked against the kernel, and containers run under its filters.

The compiler tests install each program in a forked child (no_new_privs set, as an
unprivileged process would) and issue the system calls directly with ``syscall(2)``, so what
they see is what the kernel decides. Calls that the kernel would reject on its own when allowed
(bad pointers, invalid flag mixes) tell "the filter let it through" (EFAULT, EINVAL) from "the
filter refused it" (EPERM) without doing anything harmful. ABIs this host cannot call (i386
via int 0x80, arm64) are checked with a small classic-BPF interpreter against an independent
reading of the profile's rules, for every syscall number of their tables.

The container tests run busybox under the real runtime: /proc/self/status, ``unshare -U``,
exec sessions, Localhost profiles from files, privileged containers, hostPID.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_runtime_containers import (
    make_runtime,
    remove_and_check,
    run_to_exit,
    stdout_of,
    tear_down,
)

from k3py.runtime import linux, seccomp
from k3py.runtime.containerinit import DEFAULT_CAPABILITIES
from k3py.runtime.containers import ContainerError, ContainerRuntime
from k3py.runtime.linux import capability_mask
from k3py.runtime.spec import ContainerSpec, SecurityProfile

MACHINE = os.uname().machine
NATIVE = seccomp.MACHINE_ABIS[MACHINE][0]
DEFAULT_CAPS = capability_mask(DEFAULT_CAPABILITIES)
TABLE = seccomp.syscall_table(NATIVE)
CLONE_NEWUSER = 0x10000000
CLONE_THREAD = 0x00010000
AF_INET, AF_ALG, AF_VSOCK = 2, 38, 40
SOCK_STREAM = 1
_libc = ctypes.CDLL(None, use_errno=True)
X32 = MACHINE == "x86_64"  # the x32 number space exists on x86_64 hosts


def nr(name: str) -> int:
    return TABLE[name]


def raw_syscall(number: int, *args: int) -> int:
    """The result, or -errno."""
    result = _libc.syscall(ctypes.c_long(number), *[ctypes.c_ulong(a & (2**64 - 1)) for a in args])
    return result if result >= 0 else -ctypes.get_errno()


def under_filter(compiled: seccomp.CompiledFilter, calls: dict[str, tuple[int, ...]]) -> dict[str, object]:
    """Each call's result in a child running under ``compiled``; {"signal": n} if it died."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_set_mode_filter(compiled.program, compiled.flags)
            results: dict[str, object] = {}
            for name, (number, *args) in calls.items():
                results[name] = raw_syscall(number, *args)
                os.write(write_end, (json.dumps({name: results[name]}) + "\n").encode())
            with open("/proc/self/status") as f:
                status = [line.split()[1] for line in f if line.startswith("Seccomp:")]
            os.write(write_end, (json.dumps({"Seccomp": status[0]}) + "\n").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    results = {}
    for line in data.decode().splitlines():
        results.update(json.loads(line))
    if os.WIFSIGNALED(status):
        results["signal"] = os.WTERMSIG(status)
    return results


def runtime_default(capabilities: int = DEFAULT_CAPS) -> seccomp.CompiledFilter:
    return seccomp.runtime_default_filter(capabilities)


# ---- RuntimeDefault against the kernel ------------------------------------------------------


def test_runtime_default_refuses_user_namespaces_keys_and_kernel_interfaces() -> None:
    results = under_filter(
        runtime_default(),
        {
            "getpid": (nr("getpid"),),
            "unshare_user": (nr("unshare"), CLONE_NEWUSER),
            "unshare_nothing": (nr("unshare"), 0),  # unshare needs CAP_SYS_ADMIN altogether
            "clone_user": (nr("clone"), CLONE_NEWUSER | CLONE_THREAD, 0, 0, 0, 0),
            "clone_plain": (nr("clone"), CLONE_THREAD, 0, 0, 0, 0),  # allowed: the kernel says EINVAL
            "clone3": (nr("clone3"), 0, 0),
            "keyctl": (nr("keyctl"), 0, -3, 0),
            "add_key": (nr("add_key"), 0, 0, 0, 0, 0),
            "request_key": (nr("request_key"), 0, 0, 0, 0),
            "bpf": (nr("bpf"), -1, 0, 0),
            "perf_event_open": (nr("perf_event_open"), 0, 0, -1, -1, 0),
            "mount": (nr("mount"), 0, 0, 0, 0, 0),
            "setns": (nr("setns"), -1, 0),
            "ptrace_allowed": (nr("ptrace"), -1, 0, 0, 0),  # allowed since 4.8: ESRCH/EIO
            "kexec_load": (nr("kexec_load"), 0, 0, 0, 0),
            "open_by_handle_at": (nr("open_by_handle_at"), -1, 0, 0),
            "settimeofday": (nr("settimeofday"), 0, 0),
            "socket_inet": (nr("socket"), AF_INET, SOCK_STREAM, 0),
            "socket_vsock": (nr("socket"), AF_VSOCK, SOCK_STREAM, 0),
            "socket_alg": (nr("socket"), AF_ALG, 5, 0),
            "socket_39": (nr("socket"), 39, SOCK_STREAM, 0),  # AF_ALG+1 (AF_NFC) is allowed
            "personality_query": (nr("personality"), 0xFFFFFFFF),
            "personality_no_aslr": (nr("personality"), 0x0040000),
            "beyond_profile": (1000,),
        },
    )
    eperm = -errno.EPERM
    assert results["getpid"] > 0 and results["Seccomp"] == "2"
    for name in ("unshare_user", "unshare_nothing", "clone_user", "keyctl", "add_key", "request_key",
                 "bpf", "perf_event_open", "mount", "setns", "kexec_load", "open_by_handle_at",
                 "settimeofday", "socket_vsock", "socket_alg", "personality_no_aslr"):  # fmt: skip
        assert results[name] == eperm, (name, results[name])
    assert results["clone_plain"] == -errno.EINVAL
    assert results["clone3"] == -errno.ENOSYS  # so glibc falls back to clone, which is checked
    assert results["ptrace_allowed"] in (-errno.ESRCH, -errno.EIO)
    assert results["socket_inet"] >= 0 and results["personality_query"] >= 0
    assert results["socket_39"] != eperm
    assert results["beyond_profile"] == -errno.ENOSYS  # newer than the profile: ENOSYS, as runc


def test_attacks_on_the_filter_itself_fail() -> None:
    """High argument bits, the x32 number space and a second filter cannot undo RuntimeDefault."""
    x32 = {
        "x32_keyctl": (nr("keyctl") | seccomp.X32_SYSCALL_BIT, 0, -3, 0),
        "x32_unshare": (nr("unshare") | seccomp.X32_SYSCALL_BIT, CLONE_NEWUSER),
        "x32_beyond": (0x40000000 + 2000,),
    } if X32 else {}  # fmt: skip
    results = under_filter(
        runtime_default(),
        {
            **x32,
            # The kernel reads socket's domain as an int: 1<<32 | AF_VSOCK *is* AF_VSOCK.
            "vsock_high_bits": (nr("socket"), (1 << 32) | AF_VSOCK, SOCK_STREAM, 0),
            "alg_high_bits": (nr("socket"), (1 << 32) | AF_ALG, 5, 0),
            "personality_high_bits": (nr("personality"), (1 << 32) | 0x0040000),
            "clone_user_high_bits": (nr("clone"), (1 << 40) | CLONE_NEWUSER | CLONE_THREAD, 0, 0, 0, 0),
            # Turning seccomp off is not a thing; a permissive second filter is ANDed with ours.
            "prctl_seccomp_disabled": (nr("prctl"), 22, 0),
        },
    )
    eperm = -errno.EPERM
    for name in ("vsock_high_bits", "alg_high_bits", "personality_high_bits", "clone_user_high_bits",
                 *[n for n in x32 if n != "x32_beyond"]):  # fmt: skip
        assert results[name] == eperm, (name, results[name])
    if X32:  # the same calls by x32 number (x86_64's audit arch with bit 30 set)
        assert results["x32_beyond"] == -errno.ENOSYS
    assert results["prctl_seccomp_disabled"] == -errno.EINVAL  # mode 0 cannot be set
    assert results["Seccomp"] == "2"
    allow_all = seccomp.compile_profile({"defaultAction": "SCMP_ACT_ALLOW"})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        linux.seccomp_set_mode_filter(runtime_default().program)
        linux.seccomp_set_mode_filter(allow_all.program)  # the filter lets seccomp() through
        os.write(write_end, str(raw_syscall(nr("unshare"), CLONE_NEWUSER)).encode())
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 100)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert int(answer) == eperm


def test_capabilities_open_their_groups_as_containerd_does() -> None:
    admin = runtime_default(DEFAULT_CAPS | capability_mask(["SYS_ADMIN"]))
    results = under_filter(
        admin,
        {
            "mount": (nr("mount"), 0, 0, 0, 0, 0),  # allowed: the kernel says EFAULT
            "clone_user": (nr("clone"), CLONE_NEWUSER | CLONE_THREAD, 0, 0, 0, 0),
            "clone3": (nr("clone3"), 0, 0),
            "keyctl": (nr("keyctl"), 0, -3, 0),  # no capability opens keyctl
        },
    )
    assert results["mount"] == -errno.EFAULT
    assert results["clone_user"] == -errno.EINVAL and results["clone3"] == -errno.EINVAL
    assert results["keyctl"] == -errno.EPERM
    time = under_filter(runtime_default(DEFAULT_CAPS | capability_mask(["SYS_TIME"])),
                        {"settimeofday": (nr("settimeofday"), 1, 0)})  # fmt: skip
    assert time["settimeofday"] == -errno.EFAULT
    ptrace = under_filter(runtime_default(DEFAULT_CAPS | capability_mask(["SYS_PTRACE"])),
                          {"kcmp": (nr("kcmp"), 0, 0, 99, 0, 0)})  # fmt: skip
    assert ptrace["kcmp"] == -errno.ESRCH  # allowed: no process 0 to compare
    assert under_filter(runtime_default(), {"kcmp": (nr("kcmp"), 0, 0, 99, 0, 0)})["kcmp"] == -errno.EPERM


# ---- Localhost-style profiles against the kernel ---------------------------------------------

GETPID = nr("getpid")  # ignores its arguments: the filter alone decides what we see
EXDEV = -errno.EXDEV


def _one_condition(op: str, value: int, value_two: int = 0, bits: int | None = None) -> seccomp.CompiledFilter:
    arg: dict = {"index": 2, "op": op, "value": value, "valueTwo": value_two}
    if bits:
        arg["bits"] = bits
    return seccomp.compile_profile({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV, "args": [arg]}],
    })  # fmt: skip


OPERATORS: dict[str, Callable[[int, int, int], bool]] = {
    "SCMP_CMP_EQ": lambda a, v, _: a == v,
    "SCMP_CMP_NE": lambda a, v, _: a != v,
    "SCMP_CMP_LT": lambda a, v, _: a < v,
    "SCMP_CMP_LE": lambda a, v, _: a <= v,
    "SCMP_CMP_GT": lambda a, v, _: a > v,
    "SCMP_CMP_GE": lambda a, v, _: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, mask, want: a & mask == want,
}


@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_argument_comparisons_are_64_bit(op: str) -> None:
    value, value_two = (0xFF000000FF00, 0x12000000EE00) if op == "SCMP_CMP_MASKED_EQ" else (0x100000005, 0)
    compiled = _one_condition(op, value, value_two)
    probes = [0, 5, 4, 6, 0x100000004, 0x100000005, 0x100000006, 0xFFFFFFFF, 0x200000000,
              0x0FFFFFFFF, 2**64 - 1, 0x12340000EE77, 0x12000000EE00]  # fmt: skip
    results = under_filter(compiled, {hex(p): (GETPID, 0, 0, p) for p in probes})
    for probe in probes:
        expected = OPERATORS[op](probe, value, value_two)
        assert (results[hex(probe)] == EXDEV) == expected, (op, hex(probe), results[hex(probe)])


def test_32_bit_conditions_ignore_the_high_word() -> None:
    compiled = _one_condition("SCMP_CMP_EQ", 7, bits=32)
    results = under_filter(compiled, {"7": (GETPID, 0, 0, 7), "high": (GETPID, 0, 0, (9 << 32) | 7),
                                      "8": (GETPID, 0, 0, 8)})  # fmt: skip
    assert results["7"] == results["high"] == EXDEV and results["8"] > 0


def test_rule_semantics_follow_runc() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EACCES,
        "syscalls": [
            {"names": ["getpid", "getppid", "exit_group", "write", "read", "close", "openat", "no_such_call"],
             "action": "SCMP_ACT_ALLOW"},
            # Conditions on different arguments: all must hold.
            {"names": ["gettid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            # Two conditions on one argument: runc adds one rule each, so either allows.
            {"names": ["getuid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            # Overlapping rules: the stricter action wins whatever the order.
            {"names": ["getgid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GE"}]},
            {"names": ["getgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV,
             "args": [{"index": 0, "value": 9, "op": "SCMP_CMP_GE"}]},
            # A rule with the default action is dropped; an ERRNO rule without errnoRet is EPERM.
            {"names": ["geteuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            {"names": ["getegid"], "action": "SCMP_ACT_ERRNO"},
        ],
    }  # fmt: skip
    results = under_filter(
        seccomp.compile_profile(profile),
        {
            "gettid_both": (nr("gettid"), 1, 2), "gettid_one": (nr("gettid"), 1, 3),
            "getuid_1": (nr("getuid"), 1), "getuid_2": (nr("getuid"), 2), "getuid_3": (nr("getuid"), 3),
            "getgid_6": (nr("getgid"), 6), "getgid_10": (nr("getgid"), 10), "getgid_1": (nr("getgid"), 1),
            "geteuid": (nr("geteuid"),), "getegid": (nr("getegid"),), "getpid": (nr("getpid"),),
            "uname": (nr("uname"), 0),
        },
    )  # fmt: skip
    eacces = -errno.EACCES
    assert results["gettid_both"] > 0 and results["gettid_one"] == eacces
    assert results["getuid_1"] >= 0 and results["getuid_2"] >= 0 and results["getuid_3"] == eacces
    assert results["getgid_6"] >= 0 and results["getgid_10"] == EXDEV and results["getgid_1"] == eacces
    assert results["geteuid"] == eacces and results["getegid"] == -errno.EPERM
    assert results["getpid"] > 0 and results["uname"] == eacces and results["Seccomp"] == "2"


def test_kill_trap_and_foreign_architectures() -> None:
    kill = seccomp.compile_profile({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [{"names": ["getpid", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
    })  # fmt: skip
    results = under_filter(kill, {"getpid": (GETPID,), "uname": (nr("uname"), 0)})
    assert results["getpid"] > 0 and "uname" not in results and results["signal"] == signal.SIGSYS
    if X32:  # only SCMP_ARCH_X86_64 listed: the x32 number space is another ABI, and is killed
        native = seccomp.compile_profile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]})
        results = under_filter(native, {"getpid": (GETPID,), "x32": (GETPID | seccomp.X32_SYSCALL_BIT,)})
        assert results["getpid"] > 0 and results["signal"] == signal.SIGSYS
    trap = seccomp.compile_profile({"defaultAction": "SCMP_ACT_ALLOW",
                                    "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_TRAP"}]})  # fmt: skip
    assert under_filter(trap, {"uname": (nr("uname"), 0)})["signal"] == signal.SIGSYS


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"syscalls": []}, "unknown action None"),
        ({"defaultAction": "SCMP_ACT_FOO"}, "unknown action 'SCMP_ACT_FOO'"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY needs a seccomp agent"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "listenerPath"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "unknown seccomp architecture"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}, "unsupported seccomp flag"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}, "defaultErrnoRet must be an integer from 0 to 4095"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, "syscalls[0].args[0].index"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]}, "syscalls[0].args[0].op 'SCMP_CMP_LIKE'"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ERRNO"}]},
         "syscalls[0].names must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]}, "value must be an integer from 0"),
    ],
)  # fmt: skip
def test_invalid_profiles_are_refused_with_the_field_named(profile: dict, message: str) -> None:
    with pytest.raises(seccomp.SeccompError, match=None) as caught:
        seccomp.compile_profile(profile)
    assert message in str(caught.value)


def test_unknown_machines_are_refused_cleanly() -> None:
    with pytest.raises(seccomp.SeccompError, match="not supported on this machine"):
        seccomp.compile_profile({"defaultAction": "SCMP_ACT_ALLOW"}, machine="riscv64")
    with pytest.raises(seccomp.SeccompError, match="no RuntimeDefault seccomp profile"):
        seccomp.runtime_default_filter(DEFAULT_CAPS, machine="s390x")


def test_compiled_programs_are_cached() -> None:
    assert runtime_default() is runtime_default()
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    assert seccomp.compile_profile(profile) is seccomp.compile_profile(json.loads(json.dumps(profile)))
    assert runtime_default().instructions <= seccomp.BPF_MAXINSNS


# ---- every ABI, every number: the program against an independent reading of the rules --------


def run_bpf(program: bytes, nr_: int, arch: int, args: tuple[int, ...]) -> int:
    """A classic-BPF interpreter for seccomp programs (the opcodes the compiler emits)."""
    data = struct.pack("=iIQ6Q", nr_ if nr_ < 2**31 else nr_ - 2**32, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a, pc = 0, 0
    for _ in range(len(insns)):
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:
            a &= k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: a & k != 0}[code]
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1
    raise AssertionError("program ran off its end")


def expected_action(profile: dict, abi: str, number: int, args: tuple[int, ...]) -> int:
    """What the profile says, read directly (not through the compiler's plan)."""
    def action(name: str, errno_ret: int | None) -> int:
        return {"SCMP_ACT_ALLOW": seccomp.RET_ALLOW, "SCMP_ACT_KILL_PROCESS": seccomp.RET_KILL_PROCESS,
                "SCMP_ACT_ERRNO": seccomp.RET_ERRNO | (1 if errno_ret is None else errno_ret)}[name]  # fmt: skip

    table = seccomp.syscall_table(abi)
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    named = {table[n] for rule in profile["syscalls"] for n in rule["names"]
             if n in table and action(rule["action"], rule.get("errnoRet")) != default}  # fmt: skip
    if named and number > max(named):
        return seccomp.RET_ERRNO | errno.ENOSYS
    word = 32 if abi in ("x86", "x32") else 64

    def holds(c: dict) -> bool:
        bits = min(word, c.get("bits", 64))
        value = args[c["index"]] & (2**bits - 1)
        return OPERATORS[c["op"]](value, c["value"] & (2**bits - 1), c.get("valueTwo", 0) & (2**bits - 1))

    matches = []
    for rule in profile["syscalls"]:
        if number not in [table.get(n) for n in rule["names"]]:
            continue
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue
        conditions = rule.get("args") or []
        if not conditions:
            return act
        if all(holds(c) for c in conditions):
            matches.append(act)
    if matches:
        return min(matches, key=lambda a: (a & 0xFFFF0000) - (2**32 if a & 0x80000000 else 0))
    return default


@pytest.mark.parametrize(("machine", "abis"), [("x86_64", ("x86_64", "x86", "x32")), ("aarch64", ("aarch64",))])
def test_every_syscall_of_every_abi_gets_what_the_profile_says(machine: str, abis: tuple[str, ...]) -> None:
    rng = random.Random(7)
    profile = seccomp.runtime_default_profile(DEFAULT_CAPS, machine)
    program = seccomp.compile_profile(profile, machine).program
    interesting = [0, 1, 2, 8, 38, 39, 40, 41, 0x20000, 0x20008, 0xFFFFFFFF, 1 << 32 | 40, CLONE_NEWUSER,
                   CLONE_NEWUSER | 17, 17, 2**64 - 1]  # fmt: skip
    for abi in abis:
        arch = seccomp.AUDIT_ARCH[abi]
        numbers = sorted(set(seccomp.syscall_table(abi).values()))
        base = seccomp.X32_SYSCALL_BIT if abi == "x32" else 0
        numbers += [base + n for n in (numbers[-1] - base + 1, 999, 5000)]
        for number in numbers:
            for _ in range(3):
                args = tuple(rng.choice(interesting) if rng.random() < 0.7 else rng.getrandbits(64) for _ in range(6))
                got = run_bpf(program, number, arch, args)
                assert got == expected_action(profile, abi, number, args), (abi, number, [hex(a) for a in args])
    foreign = seccomp.AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"]
    assert run_bpf(program, 39, foreign, (0,) * 6) == seccomp.RET_KILL_PROCESS


def test_long_jumps_are_assembled_correctly() -> None:
    """Hundreds of conditional rules push targets beyond the 255-instruction reach of a jump."""
    names = sorted(seccomp.syscall_table("x86_64"))[:300]  # interpreted: any host will do
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": [name], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]} for i, name in enumerate(names)],
    }  # fmt: skip
    compiled = seccomp.compile_profile(profile, "x86_64")
    assert compiled.instructions > 600
    table = seccomp.syscall_table("x86_64")
    for i, name in enumerate(names):
        for arg in (i, i + 1, i | 1 << 32):
            got = run_bpf(compiled.program, table[name], seccomp.AUDIT_ARCH["x86_64"], (0, arg, 0, 0, 0, 0))
            assert got == expected_action(profile, "x86_64", table[name], (0, arg, 0, 0, 0, 0)), (name, arg)


# ---- containers under the runtime -----------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, test_images: Path) -> Iterator[ContainerRuntime]:
    rt = make_runtime(tmp_path_factory.mktemp("seccomp"), test_images)
    yield rt
    assert tear_down(rt) == [], "a test left containers behind"


CHECK = "grep '^Seccomp:' /proc/self/status; unshare -U true 2>&1; echo unshare=$?"


def test_runtime_default_container_and_its_exec_sessions(runtime: ContainerRuntime) -> None:
    code, _, lines, _ = run_to_exit(runtime, CHECK, seccomp=SecurityProfile("RuntimeDefault"))
    out = stdout_of(lines)
    assert code == 0 and out[0] == "Seccomp:\t2", out
    assert "Operation not permitted" in out[1] and out[2] == "unshare=1", out
    cid = runtime.run(ContainerSpec(name="rd", image="busybox", command=["sleep", "60"],
                                    seccomp=SecurityProfile("RuntimeDefault")))  # fmt: skip
    result = runtime.exec_sync(cid, ["sh", "-c", CHECK])
    out = result.stdout.decode().splitlines()
    assert out[0] == "Seccomp:\t2" and "Operation not permitted" in out[1] and out[2] == "unshare=1", out
    remove_and_check(runtime, cid)


def test_unconfined_and_privileged_containers_have_no_filter(runtime: ContainerRuntime) -> None:
    for spec in ({}, {"seccomp": SecurityProfile("Unconfined")},
                 {"seccomp": SecurityProfile("RuntimeDefault"), "privileged": True}):  # fmt: skip
        _, _, lines, _ = run_to_exit(runtime, CHECK, **spec)
        out = stdout_of(lines)
        assert out[0] == "Seccomp:\t0" and out[-1] == "unshare=0", (spec, out)


@pytest.mark.parametrize("identity", [{"no_new_privs": True}, {"user": "65534:65534"}, {"capabilities_drop": ["ALL"]}])
def test_the_filter_is_installed_whatever_the_identity(runtime: ContainerRuntime, identity: dict) -> None:
    code, reason, lines, _ = run_to_exit(runtime, CHECK, seccomp=SecurityProfile("RuntimeDefault"), **identity)
    out = stdout_of(lines)
    assert code == 0, (reason, lines)
    assert out[0] == "Seccomp:\t2" and out[-1] == "unshare=1", out


def test_localhost_profiles_from_files(runtime: ContainerRuntime, tmp_path: Path) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}],
    }))  # fmt: skip
    _, _, lines, _ = run_to_exit(
        runtime, "mkdir /tmp/x 2>&1; echo mkdir=$?; touch /tmp/y && echo touched",
        seccomp=SecurityProfile("Localhost", str(profile)),
    )
    out = stdout_of(lines)
    assert "Operation not permitted" in out[0] and out[1:] == ["mkdir=1", "touched"], out
    missing = tmp_path / "missing.json"
    with pytest.raises(ContainerError) as caught:
        runtime.create_container(ContainerSpec(name="m", image="busybox", command=["true"],
                                               seccomp=SecurityProfile("Localhost", str(missing))))  # fmt: skip
    assert str(caught.value) == f'cannot load seccomp profile "{missing}": open {missing}: no such file or directory'
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ContainerError, match='decoding seccomp profile failed "'):
        runtime.create_container(ContainerSpec(name="b", image="busybox", command=["true"],
                                               seccomp=SecurityProfile("Localhost", str(broken))))  # fmt: skip
    assert [s for s in runtime.list_containers() if s.name in ("m", "b")] == []  # nothing half-made


def test_host_pid_sees_the_nodes_processes(runtime: ContainerRuntime) -> None:
    supervisor = runtime.supervisor_pid()
    script = f"cat /proc/{supervisor}/comm 2>&1; ls /proc | grep -c '^[0-9]'"
    _, _, lines, _ = run_to_exit(runtime, script, host_pid=True)
    out = stdout_of(lines)
    assert out[0] == "k3py-supervise" and int(out[1]) > 5, out
    _, _, lines, _ = run_to_exit(runtime, script)
    out = stdout_of(lines)
    assert out[0] != "k3py-supervise" and int(out[1]) <= 3, out
    # A hostPID container is stopped like any other, and leaves no process behind.
    cid = runtime.run(ContainerSpec(name="hp", image="busybox", command=["sh", "-c", "sleep 300 & sleep 300"],
                                    host_pid=True))  # fmt: skip
    pid = runtime.container_status(cid).pid
    assert Path(f"/proc/{pid}").exists() and pid != 1
    status = runtime.stop_container(cid, timeout=1)
    assert status.state == "exited"
    remove_and_check(runtime, cid)
