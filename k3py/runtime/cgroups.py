"""Container cgroups on cgroup v2 and on v1 (hybrid hosts) behind one small interface.

``open_cgroup(parent, name)`` returns a ``Cgroup`` for ``<parent>/<name>``: on a pure v2 host one
directory under /sys/fs/cgroup; on a v1 host one directory per controller we use (cpu, cpuacct,
memory, pids, devices). The same calls then work on both:

- ``create(resources)`` makes the directories and writes the limits (cpu shares → v2 weight with
  the formula runc uses, quota/period, memory limit, pids limit);
- ``restrict_devices(rules)`` installs the device allowlist (v1 ``devices`` controller, v2 a
  BPF device program; see ``devices``), failing closed where neither is available;
- ``join_self()`` moves the calling process in (writing 0 means "me" and works from inside a pid
  namespace);
- ``oom_killed()`` reads the kernel's OOM-kill counter (v1 ``memory.oom_control``, v2
  ``memory.events``); ``usage()`` reads memory, cpu time and pid count;
- ``remove()`` kills whatever is left and removes every directory, retrying while the kernel
  still reports the group busy; ``prune_empty`` removes a chain of parent groups (a pod's,
  its QoS class's) once nothing lives below them.

Only ``os`` (and ``devices``, which needs ``ctypes``) is imported: the lean supervisor loads
this module.
"""

from __future__ import annotations

import os
import time

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "devices")


def is_v2(root: str = CGROUP_ROOT) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) → v2 cpu.weight (1..10000), as runc converts."""
    if shares <= 0:
        return 100
    return 1 + ((shares - 2) * 9999) // 262142


class Cgroup:
    """The cgroup directories of one container (or sandbox).

    ``devices=False`` leaves out the v1 ``devices`` controller: for the groups of containers an
    older k3py made, which have none (see ``container_cgroup``).
    """

    def __init__(
        self, parent: str, name: str, root: str = CGROUP_ROOT, *, devices: bool = True
    ) -> None:
        self.root = root
        self.relative = os.path.join(parent.strip("/"), name)
        self.v2 = is_v2(root)
        if self.v2:
            self.dirs = {"": os.path.join(root, self.relative)}
        else:
            self.dirs = {
                c: os.path.join(root, c, self.relative)
                for c in V1_CONTROLLERS
                if os.path.isdir(os.path.join(root, c)) and (devices or c != "devices")
            }

    @property
    def renamable(self) -> bool:
        """cgroup v1 directories can be renamed (within their parent); v2 ones cannot."""
        return not self.v2

    def rename_to(self, other: Cgroup) -> None:
        """Rename this group's directories to ``other``'s (same parent; v1 only)."""
        for controller, directory in self.dirs.items():
            os.rename(directory, other.dirs[controller])

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs["" if self.v2 else controller], name)

    def create(self, resources: dict) -> None:
        """Create the directories and apply ``resources`` (keys: cpu_shares, cpu_quota,
        cpu_period, memory_limit, pids_limit; absent or 0 means unlimited)."""
        if self.v2:
            self._enable_v2_controllers()
        for directory in self.dirs.values():
            os.makedirs(directory, exist_ok=True)
        shares = int(resources.get("cpu_shares") or 0)
        quota = int(resources.get("cpu_quota") or 0)
        period = int(resources.get("cpu_period") or 0) or 100000
        memory = int(resources.get("memory_limit") or 0)
        pids = int(resources.get("pids_limit") or 0)
        if self.v2:
            if shares:
                _write(self._file("cpu", "cpu.weight"), str(shares_to_weight(shares)))
            if quota > 0:
                _write(self._file("cpu", "cpu.max"), f"{quota} {period}")
            if memory:
                _write(self._file("memory", "memory.max"), str(memory))
                if os.path.exists(self._file("memory", "memory.swap.max")):
                    _write(
                        self._file("memory", "memory.swap.max"), "0"
                    )  # no swap, as on v1 without memsw
            if pids:
                _write(self._file("pids", "pids.max"), str(pids))
            return
        if shares and "cpu" in self.dirs:
            _write(self._file("cpu", "cpu.shares"), str(shares))
        if quota > 0 and "cpu" in self.dirs:
            _write(self._file("cpu", "cpu.cfs_period_us"), str(period))
            _write(self._file("cpu", "cpu.cfs_quota_us"), str(quota))
        if memory and "memory" in self.dirs:
            _write(self._file("memory", "memory.limit_in_bytes"), str(memory))
        if pids and "pids" in self.dirs:
            _write(self._file("pids", "pids.max"), str(pids))

    def restrict_devices(self, rules: list[str] | None) -> None:
        """Allow the group's processes only the devices ``rules`` name (None: leave the
        parent's list, which is what a privileged container gets). Raises OSError where the
        host offers no way to restrict devices: a container is never started unconfined."""
        if rules is None:
            return
        from k3py.runtime import devices

        if self.v2:
            devices.attach_v2(self.dirs[""], rules)
            return
        directory = self.dirs.get("devices")
        if directory is None:
            raise OSError(
                f"no cgroup v1 devices controller under {self.root}: "
                "cannot keep the container away from host devices"
            )
        devices.apply_v1(directory, rules)

    def _enable_v2_controllers(self) -> None:
        path = self.root
        for part in self.relative.split("/")[:-1]:
            control = os.path.join(path, "cgroup.subtree_control")
            try:
                _write(control, "+cpu +memory +pids")
            except OSError:
                pass  # a controller may be unavailable; limits for it are then not applied
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        try:
            _write(os.path.join(path, "cgroup.subtree_control"), "+cpu +memory +pids")
        except OSError:
            pass

    def join_self(self) -> None:
        """Move the calling process in; it must be single-threaded (a freshly forked child).

        On v1 we write to ``tasks`` (this thread) rather than ``cgroup.procs`` (the whole thread
        group): moving only the current thread skips the global threadgroup lock, whose RCU
        grace period makes a ``cgroup.procs`` write take ~10 ms; for a single-threaded process
        the result is the same.
        """
        target = "cgroup.procs" if self.v2 else "tasks"
        for directory in self.dirs.values():
            try:
                _write(os.path.join(directory, target), "0")
            except OSError as exc:
                # EINVAL from the v1 cpu controller: a real-time task without an RT budget.
                raise OSError(
                    exc.errno, f"cannot join cgroup {directory}: {exc.strerror}"
                ) from None

    def join(self, pid: int) -> None:
        for directory in self.dirs.values():
            _write(os.path.join(directory, "cgroup.procs"), str(pid))

    def pids(self) -> list[int]:
        directory = self.dirs.get("" if self.v2 else "pids") or next(iter(self.dirs.values()))
        return [int(p) for p in _read(os.path.join(directory, "cgroup.procs")).split()]

    def oom_killed(self) -> bool:
        text = _read(self._file("memory", "memory.events" if self.v2 else "memory.oom_control"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def usage(self) -> dict:
        """memory_bytes, cpu_ns and pids of the group now."""
        if self.v2:
            memory = _read(self._file("memory", "memory.current")).strip()
            cpu_usec = 0
            for line in _read(self._file("cpu", "cpu.stat")).splitlines():
                if line.startswith("usage_usec "):
                    cpu_usec = int(line.split()[1])
            pids = _read(self._file("pids", "pids.current")).strip()
            return {
                "memory_bytes": int(memory or 0),
                "cpu_ns": cpu_usec * 1000,
                "pids": int(pids or 0),
            }
        memory = _read(self._file("memory", "memory.usage_in_bytes")).strip()
        cpu = (
            _read(self._file("cpuacct", "cpuacct.usage")).strip() if "cpuacct" in self.dirs else ""
        )
        pids = _read(self._file("pids", "pids.current")).strip()
        return {"memory_bytes": int(memory or 0), "cpu_ns": int(cpu or 0), "pids": int(pids or 0)}

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs.values())

    def remove(self, timeout: float = 5.0) -> None:
        """Kill any process still inside, then remove every directory (raises OSError on timeout)."""
        deadline = time.monotonic() + timeout
        for directory in self.dirs.values():
            while os.path.isdir(directory):
                for pid in _read(os.path.join(directory, "cgroup.procs")).split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)


def prune_empty(parent: str, relative: str) -> None:
    """Remove ``<parent>/<relative>`` and its ancestors below ``parent`` while they are empty
    (no processes, no child groups); stops quietly at the first one still in use."""
    parts = relative.strip("/").split("/")
    while parts and parts != [""]:
        group = Cgroup(parent, "/".join(parts))
        for directory in group.dirs.values():
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                return  # busy: a container or another pod still lives below it
        parts.pop()


def open_cgroup(parent: str, name: str) -> Cgroup:
    return Cgroup(parent, name)


def container_cgroup(spec: dict) -> Cgroup:
    """The group a container's ``config.json`` names: ``{"parent", "name", "devices"}``, where
    ``devices`` is the allowlist (None: privileged). A config without the key was written by a
    k3py before device rules, whose containers have no v1 device group."""
    return Cgroup(spec["parent"], spec["name"], devices="devices" in spec)
