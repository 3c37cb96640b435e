"""Seccomp profiles compiled to classic BPF in pure Python: RuntimeDefault, Localhost, Unconfined.

A profile is the OCI runtime spec's ``linux.seccomp`` object (``defaultAction``,
``defaultErrnoRet``, ``architectures``, ``flags``, ``syscalls[{names, action, errnoRet, args}]``),
the format containerd reads for Localhost profiles. ``compile_profile`` turns one into the
program the kernel runs on every system call (``seccomp(SECCOMP_SET_MODE_FILTER)``):

1. the audit architecture is checked: each ABI the profile names (and the host's native one,
   always) gets its own block; x86_64 and x32 share an audit arch and are told apart by the x32
   bit of the syscall number; any other ABI is killed (``SECCOMP_RET_KILL_PROCESS``);
2. numbers above the highest one the profile names answer ENOSYS (unless the default action
   lets calls through), so a libc can fall back from system calls newer than the profile, as
   runc arranges it;
3. a binary search over number ranges (neighbouring numbers with one outcome share a range)
   reaches either a return or, for a call with argument rules, the rules in order of
   strictness (the kernel's own order: kill > trap > errno > trace > log > allow), then the
   default action. Argument comparisons are 64-bit on 64-bit ABIs (high word, then low) and
   32-bit on 32-bit ABIs, as libseccomp compares them.

Semantics follow runc on libseccomp: a rule whose action is the default is dropped; unknown
names are ignored (a newer profile on an older table); a rule with two conditions on the same
argument becomes one rule per condition (runc's historical OR); all other conditions of a
rule must all hold. An unconditional rule decides its syscall (the first one, if several).
Conditions may carry ``"bits": 32`` (a k3py extension, used by RuntimeDefault) to compare
only the low 32 bits of an argument the kernel reads as an ``int``, so set high bits cannot
slip a refused value past the filter.

``runtime_default_profile(capabilities)`` builds RuntimeDefault — containerd's default profile
(``seccomp_default.json`` holds its rules as data) for the container's capability set. The
syscall numbers come from ``seccomp_syscalls.json``. Compiled programs are cached per profile
and capability set, so only the first container of a kind pays the few milliseconds.

Only the standard library is imported; nothing here needs privileges (installing the program
is ``linux.seccomp_set_mode_filter``, done by ``containerinit``).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

# Return values (linux/seccomp.h); the low 16 bits carry an errno or a tracer's data.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
EPERM = 1
ENOSYS = 38
MAX_ERRNO = 4095
BPF_MAXINSNS = 4096

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
X32_SYSCALL_BIT = 0x40000000
AUDIT_ARCH = {"x86_64": 0xC000003E, "x32": 0xC000003E, "x86": 0x40000003, "aarch64": 0xC00000B7}
ABI_BITS = {"x86_64": 64, "aarch64": 64, "x32": 32, "x86": 32}  # argument width, as libseccomp
# The ABIs a process on this machine (``uname -m``) can call the kernel with; the first is
# native. 32-bit ARM tasks on arm64 hosts have no table here: they meet the bad-arch action.
MACHINE_ABIS = {"x86_64": ("x86_64", "x86", "x32"), "aarch64": ("aarch64",)}
# Profile architecture names -> the ABI (None: a valid name for an ABI this host cannot run).
ARCHITECTURES: dict[str, str | None] = {
    "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_ARM": None, "SCMP_ARCH_MIPS": None,
    "SCMP_ARCH_MIPS64": None, "SCMP_ARCH_MIPS64N32": None, "SCMP_ARCH_MIPSEL": None,
    "SCMP_ARCH_MIPSEL64": None, "SCMP_ARCH_MIPSEL64N32": None, "SCMP_ARCH_PPC": None,
    "SCMP_ARCH_PPC64": None, "SCMP_ARCH_PPC64LE": None, "SCMP_ARCH_S390": None,
    "SCMP_ARCH_S390X": None, "SCMP_ARCH_PARISC": None, "SCMP_ARCH_PARISC64": None,
    "SCMP_ARCH_RISCV64": None, "SCMP_ARCH_LOONGARCH64": None, "SCMP_ARCH_M68K": None,
    "SCMP_ARCH_SH": None, "SCMP_ARCH_SHEB": None,
}  # fmt: skip
OPERATORS = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)  # fmt: skip
_ACTIONS_WITHOUT_DATA = {
    "SCMP_ACT_KILL": RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": RET_TRAP,
    "SCMP_ACT_ALLOW": RET_ALLOW,
    "SCMP_ACT_LOG": RET_LOG,
}
_DATA_DIR = os.path.dirname(os.path.abspath(__file__))

# Classic BPF opcodes and the offsets of struct seccomp_data.
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_JA = 0x05  # BPF_JMP | BPF_JA
_JEQ = 0x15
_JGT = 0x25
_JGE = 0x35
_JSET = 0x45
_RET = 0x06  # BPF_RET | BPF_K
_NR_OFFSET, _ARCH_OFFSET, _ARGS_OFFSET = 0, 4, 16
_WORD = 0xFFFFFFFF


class SeccompError(ValueError):
    """The profile is invalid or cannot be compiled on this host; the message says why."""


@dataclass(frozen=True)
class CompiledFilter:
    """A program ready for ``seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)``."""

    program: bytes  # struct sock_filter[], host byte order
    flags: int = 0

    @property
    def instructions(self) -> int:
        return len(self.program) // 8


@dataclass(frozen=True)
class _Condition:
    index: int
    op: str
    value: int
    value_two: int
    bits: int  # 64, or 32 to compare the low word only


@dataclass(frozen=True)
class _Rule:
    action: int
    conditions: tuple[_Condition, ...]


# ---- data --------------------------------------------------------------------------------------


@cache
def syscall_table(abi: str) -> dict[str, int]:
    """Name -> number of every system call of ``abi`` (x86_64, x86, x32, aarch64)."""
    return _syscall_tables()[abi]


@cache
def _syscall_tables() -> dict[str, dict[str, int]]:
    with open(os.path.join(_DATA_DIR, "seccomp_syscalls.json")) as f:
        data = json.load(f)
    data.pop("about", None)
    return data


@cache
def _runtime_default_data() -> dict[str, Any]:
    with open(os.path.join(_DATA_DIR, "seccomp_default.json")) as f:
        return json.load(f)


def host_machine() -> str:
    return os.uname().machine


def runtime_default_profile(capabilities: int, machine: str | None = None) -> dict[str, Any]:
    """The RuntimeDefault profile (OCI format) for a container with this capability mask."""
    from k3py.runtime.linux import CAPABILITIES

    machine = machine or host_machine()
    data = _runtime_default_data()
    if machine not in data["architectures"]:
        raise SeccompError(f"no RuntimeDefault seccomp profile for this machine ({machine})")

    def has(cap: str) -> bool:
        return bool(capabilities >> CAPABILITIES[cap.removeprefix("CAP_")] & 1)

    syscalls = []
    for rule in data["syscalls"]:
        if "machines" in rule and machine not in rule["machines"]:
            continue
        if "withCapability" in rule and not has(rule["withCapability"]):
            continue
        if "withoutCapability" in rule and has(rule["withoutCapability"]):
            continue
        syscalls.append(
            {k: v for k, v in rule.items() if k in ("names", "action", "errnoRet", "args")}
        )
    return {
        "defaultAction": data["defaultAction"],
        "defaultErrnoRet": data["defaultErrnoRet"],
        "architectures": list(data["architectures"][machine]),
        "syscalls": syscalls,
    }


# ---- profiles ----------------------------------------------------------------------------------


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SeccompError(f"{where} must be an integer from {low} to {high}, not {value!r}")
    return value


def _action(name: Any, errno_ret: Any, where: str, errno_where: str) -> int:
    if name in _ACTIONS_WITHOUT_DATA:
        return _ACTIONS_WITHOUT_DATA[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        errno = EPERM if errno_ret is None else _integer(errno_ret, errno_where, 0, MAX_ERRNO)
        return (RET_ERRNO if name == "SCMP_ACT_ERRNO" else RET_TRACE) | errno
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError(
            f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which k3py does not run"
        )
    raise SeccompError(f"{where}: unknown action {name!r}")


def _conditions(args: Any, where: str) -> list[tuple[_Condition, ...]]:
    """The rule's conditions as alternatives (each a conjunction), runc's way."""
    if args is None:
        return [()]
    if not isinstance(args, list):
        raise SeccompError(f"{where}.args must be a list")
    conditions = []
    for i, arg in enumerate(args):
        at = f"{where}.args[{i}]"
        if not isinstance(arg, dict):
            raise SeccompError(f"{at} must be an object")
        op = arg.get("op")
        if op not in OPERATORS:
            raise SeccompError(f"{at}.op {op!r} is not one of {', '.join(OPERATORS)}")
        bits = arg.get("bits", 64)
        if bits not in (32, 64):
            raise SeccompError(f"{at}.bits must be 32 or 64")
        conditions.append(
            _Condition(
                index=_integer(arg.get("index"), f"{at}.index", 0, 5),
                op=op,
                value=_integer(arg.get("value", 0), f"{at}.value", 0, 2**64 - 1),
                value_two=_integer(arg.get("valueTwo", 0), f"{at}.valueTwo", 0, 2**64 - 1),
                bits=bits,
            )
        )
    if not conditions:
        return [()]
    indexes = [c.index for c in conditions]
    if len(set(indexes)) < len(indexes):
        return [(c,) for c in conditions]  # runc: repeated argument, one rule per condition
    return [tuple(conditions)]


def _strictness(action: int) -> int:
    """Lower is stricter: the kernel compares actions as signed values of their top 16 bits."""
    top = action & 0xFFFF0000
    return top - (1 << 32) if top & 0x80000000 else top


class _Plan:
    """What one ABI's block decides: per syscall number a return value or a list of rules."""

    def __init__(self, default: int) -> None:
        self.default = default
        self.unconditional: dict[int, int] = {}
        self.conditional: dict[int, list[_Rule]] = {}

    def add(self, nr: int, rule: _Rule) -> None:
        if not rule.conditions:
            self.unconditional.setdefault(nr, rule.action)
        else:
            self.conditional.setdefault(nr, []).append(rule)

    def decisions(self) -> dict[int, tuple]:
        """Number -> ("ret", value) or ("rules", rules sorted strictest first)."""
        result: dict[int, tuple] = {
            nr: ("ret", action) for nr, action in self.unconditional.items()
        }
        for nr, rules in self.conditional.items():
            if nr not in result:
                ordered = sorted(rules, key=lambda r: _strictness(r.action))  # stable
                result[nr] = ("rules", tuple(ordered))
        return result


def parse_profile(text: str | bytes, source: str) -> dict[str, Any]:
    """A profile file's JSON (errors name ``source``, as containerd's do)."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise SeccompError(f'decoding seccomp profile failed "{source}": {exc}') from None
    if not isinstance(profile, dict):
        raise SeccompError(f'decoding seccomp profile failed "{source}": not a JSON object')
    return profile


def compile_profile(profile: dict[str, Any], machine: str | None = None) -> CompiledFilter:
    """Compile an OCI seccomp profile for ``machine`` (default: this host); cached."""
    machine = machine or host_machine()
    try:
        key = json.dumps(profile, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise SeccompError(f"seccomp profile is not JSON data: {exc}") from None
    return _compile_cached(key, machine)


def runtime_default_filter(capabilities: int, machine: str | None = None) -> CompiledFilter:
    """RuntimeDefault compiled for a container with this capability mask; cached."""
    machine = machine or host_machine()
    return _runtime_default_cached(capabilities, machine)


@lru_cache(maxsize=64)
def _runtime_default_cached(capabilities: int, machine: str) -> CompiledFilter:
    return _compile(runtime_default_profile(capabilities, machine), machine)


@lru_cache(maxsize=64)
def _compile_cached(key: str, machine: str) -> CompiledFilter:
    return _compile(json.loads(key), machine)


def _compile(profile: dict[str, Any], machine: str) -> CompiledFilter:
    if machine not in MACHINE_ABIS:
        raise SeccompError(f"seccomp filters are not supported on this machine ({machine})")
    if not isinstance(profile, dict):
        raise SeccompError("a seccomp profile must be a JSON object")
    default = _action(
        profile.get("defaultAction"),
        profile.get("defaultErrnoRet"),
        "defaultAction",
        "defaultErrnoRet",
    )
    if profile.get("listenerPath"):
        raise SeccompError(
            "listenerPath: seccomp agents (SCMP_ACT_NOTIFY) are not supported by k3py"
        )
    flags = 0
    if not isinstance(profile.get("flags") or [], list):
        raise SeccompError("flags must be a list")
    for flag in profile.get("flags") or []:
        if flag not in FLAGS:
            raise SeccompError(f"unsupported seccomp flag {flag!r} (supported: {', '.join(FLAGS)})")
        flags |= FLAGS[flag]
    possible = MACHINE_ABIS[machine]
    abis = [possible[0]]
    for name in profile.get("architectures") or []:
        if name not in ARCHITECTURES:
            raise SeccompError(f"unknown seccomp architecture {name!r}")
        abi = ARCHITECTURES[name]
        if abi in possible and abi not in abis:
            abis.append(abi)
    plans = {abi: _Plan(default) for abi in abis}
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError("syscalls must be a list")
    for i, entry in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            raise SeccompError(f"{where} must be an object")
        names = entry.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{where}.names must be a list of syscall names")
        action = _action(entry.get("action"), entry.get("errnoRet"), where, f"{where}.errnoRet")
        alternatives = _conditions(entry.get("args"), where)
        if action == default:
            continue  # as runc: redundant with the default
        for abi in abis:
            table = syscall_table(abi)
            for name in names:
                nr = table.get(name)
                if nr is None:
                    continue  # not a syscall of this ABI (or newer than our table)
                for conditions in alternatives:
                    plans[abi].add(nr, _Rule(action, conditions))
    program = _generate(plans, default)
    if len(program) > BPF_MAXINSNS:
        raise SeccompError(
            f"the seccomp profile compiles to {len(program)} BPF instructions; the kernel takes at most {BPF_MAXINSNS}"
        )
    return CompiledFilter(b"".join(struct.pack("=HBBI", *insn) for insn in program), flags)


# ---- code generation ---------------------------------------------------------------------------


class _Assembler:
    """Classic BPF with forward labels; a conditional jump whose target is more than 255
    instructions away becomes a short jump over an unconditional ``ja`` (32-bit offset)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.labels = 0

    def label(self) -> int:
        self.labels += 1
        return self.labels

    def place(self, label: int) -> None:
        self.items.append(("label", label))

    def load(self, offset: int) -> None:
        self.items.append(("stmt", _LD_ABS, offset))

    def mask(self, value: int) -> None:
        self.items.append(("stmt", _AND_K, value))

    def ret(self, value: int) -> None:
        self.items.append(("stmt", _RET, value))

    def jump(self, op: int, k: int, true: int | None, false: int | None) -> None:
        """Jump to label ``true``/``false`` (None: the next instruction) on ``A op k``."""
        self.items.append(("jump", op, k, true, false))

    def assemble(self) -> list[tuple[int, int, int, int]]:
        long: set[int] = set()
        while True:
            address, labels = self._layout(long)
            grown = False
            for i, item in enumerate(self.items):
                if item[0] == "jump" and i not in long:
                    for target in item[3:]:
                        if target is not None and labels[target] - address[i] - 1 > 255:
                            long.add(i)
                            grown = True
                            break
            if not grown:
                break
        program: list[tuple[int, int, int, int]] = []
        for i, item in enumerate(self.items):
            kind = item[0]
            if kind == "stmt":
                program.append((item[1], 0, 0, item[2]))
            elif kind == "jump":
                _, op, k, true, false = item
                here = address[i]
                if i not in long:
                    jt = 0 if true is None else labels[true] - here - 1
                    jf = 0 if false is None else labels[false] - here - 1
                    program.append((op, jt, jf, k))
                elif true is not None and false is not None:
                    program.append((op, 0, 1, k))
                    program.append((_JA, 0, 0, labels[true] - here - 2))
                    program.append((_JA, 0, 0, labels[false] - here - 3))
                elif true is not None:
                    program.append((op, 0, 1, k))
                    program.append((_JA, 0, 0, labels[true] - here - 2))
                else:
                    assert false is not None
                    program.append((op, 1, 0, k))
                    program.append((_JA, 0, 0, labels[false] - here - 2))
        return program

    def _layout(self, long: set[int]) -> tuple[dict[int, int], dict[int, int]]:
        address: dict[int, int] = {}
        labels: dict[int, int] = {}
        at = 0
        for i, item in enumerate(self.items):
            if item[0] == "label":
                labels[item[1]] = at
                continue
            address[i] = at
            if item[0] == "jump" and i in long:
                at += 3 if item[3] is not None and item[4] is not None else 2
            else:
                at += 1
        return address, labels


def _generate(plans: dict[str, _Plan], default: int) -> list[tuple[int, int, int, int]]:
    asm = _Assembler()
    allow_like = _strictness(default) >= _strictness(RET_TRACE)  # trace, log, allow
    asm.load(_ARCH_OFFSET)
    groups: dict[int, list[str]] = {}
    for abi in plans:
        groups.setdefault(AUDIT_ARCH[abi], []).append(abi)
    entry = {arch: asm.label() for arch in groups}
    for arch in groups:
        asm.jump(_JEQ, arch, entry[arch], None)
    asm.ret(RET_KILL_PROCESS)  # an ABI the filter does not cover
    for arch, abis in groups.items():
        asm.place(entry[arch])
        asm.load(_NR_OFFSET)
        if arch == AUDIT_ARCH["x86_64"]:
            x32 = asm.label()
            asm.jump(_JSET, X32_SYSCALL_BIT, x32, None)
            if "x86_64" in abis:
                _block(asm, plans["x86_64"], "x86_64", 0, allow_like)
            else:
                asm.ret(RET_KILL_PROCESS)
            asm.place(x32)
            if "x32" in abis:
                _block(asm, plans["x32"], "x32", X32_SYSCALL_BIT, allow_like)
            else:
                asm.ret(RET_KILL_PROCESS)
        else:
            [abi] = abis
            _block(asm, plans[abi], abi, 0, allow_like)
    return asm.assemble()


def _block(asm: _Assembler, plan: _Plan, abi: str, base: int, allow_like: bool) -> None:
    """One ABI's decision, with the syscall number in A."""
    decisions = plan.decisions()
    if not allow_like and decisions:
        highest = max(decisions)
        within = asm.label()
        asm.jump(_JGT, highest, None, within)
        asm.ret(RET_ERRNO | ENOSYS)  # newer than anything the profile names
        asm.place(within)
    default = ("ret", plan.default)
    ranges: list[tuple[int, tuple]] = []  # (first number, decision), each up to the next start
    following = base  # the first number no range covers yet
    for nr in sorted(decisions):
        if nr > following and (not ranges or ranges[-1][1] != default):
            ranges.append((following, default))
        if not ranges or ranges[-1][1] != decisions[nr]:
            ranges.append((nr, decisions[nr]))
        following = nr + 1
    if not ranges or ranges[-1][1] != default:
        ranges.append((following, default))
    _search(asm, ranges, 0, len(ranges), ABI_BITS[abi], plan.default)


def _search(
    asm: _Assembler, ranges: list[tuple[int, tuple]], lo: int, hi: int, bits: int, default: int
) -> None:
    if hi - lo == 1:
        kind, value = ranges[lo][1]
        if kind == "ret":
            asm.ret(value)
        else:
            _rules(asm, value, bits, default)
        return
    middle = (lo + hi) // 2
    upper = asm.label()
    asm.jump(_JGE, ranges[middle][0], upper, None)
    _search(asm, ranges, lo, middle, bits, default)
    asm.place(upper)
    _search(asm, ranges, middle, hi, bits, default)


def _rules(asm: _Assembler, rules: tuple[_Rule, ...], bits: int, default: int) -> None:
    for rule in rules:
        mismatch = asm.label()
        for condition in rule.conditions:
            _condition(asm, condition, min(bits, condition.bits), mismatch)
        asm.ret(rule.action)
        asm.place(mismatch)
    asm.ret(default)


def _condition(asm: _Assembler, c: _Condition, bits: int, false: int) -> None:
    """Fall through when argument ``c.index`` satisfies ``c``; else jump to ``false``."""
    low_offset = _ARGS_OFFSET + 8 * c.index  # little-endian: the low word first
    value_hi, value_lo = c.value >> 32, c.value & _WORD
    two_hi, two_lo = c.value_two >> 32, c.value_two & _WORD
    true = asm.label()
    if bits == 64:
        asm.load(low_offset + 4)
        if c.op == "SCMP_CMP_MASKED_EQ":
            asm.mask(value_hi)
            asm.jump(_JEQ, two_hi, None, false)
        elif c.op == "SCMP_CMP_EQ":
            asm.jump(_JEQ, value_hi, None, false)
        elif c.op == "SCMP_CMP_NE":
            asm.jump(_JEQ, value_hi, None, true)
        elif c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
            asm.jump(_JGT, value_hi, true, None)
            asm.jump(_JEQ, value_hi, None, false)
        else:  # LT, LE
            asm.jump(_JGT, value_hi, false, None)
            asm.jump(_JEQ, value_hi, None, true)
    asm.load(low_offset)
    if c.op == "SCMP_CMP_MASKED_EQ":
        asm.mask(value_lo)
        asm.jump(_JEQ, two_lo, None, false)
    elif c.op == "SCMP_CMP_EQ":
        asm.jump(_JEQ, value_lo, None, false)
    elif c.op == "SCMP_CMP_NE":
        asm.jump(_JEQ, value_lo, false, None)
    elif c.op == "SCMP_CMP_GT":
        asm.jump(_JGT, value_lo, None, false)
    elif c.op == "SCMP_CMP_GE":
        asm.jump(_JGE, value_lo, None, false)
    elif c.op == "SCMP_CMP_LT":
        asm.jump(_JGE, value_lo, false, None)
    else:  # LE
        asm.jump(_JGT, value_lo, false, None)
    asm.place(true)
