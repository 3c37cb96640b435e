"""The cgroup interface on both hierarchies: v1 (this host's controllers) and v2 (the unified
hierarchy this hybrid host mounts at /sys/fs/cgroup/unified, which has no controllers)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from k3py.runtime.cgroups import Cgroup, shares_to_weight

UNIFIED = "/sys/fs/cgroup/unified"


def test_shares_to_weight_matches_runc() -> None:
    assert [shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]
    assert shares_to_weight(0) == 100


def spawn_sleeper() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    return pid


@pytest.mark.parametrize("root", ["/sys/fs/cgroup", UNIFIED])
def test_create_join_usage_remove(root: str) -> None:
    if root == UNIFIED and not os.path.exists(os.path.join(root, "cgroup.controllers")):
        pytest.fail(f"{root} is not a cgroup2 mount on this host")
    parent = f"k3py-test-{secrets.token_hex(4)}"
    group = Cgroup(parent, "c1", root=root)
    assert group.v2 == (root == UNIFIED)
    pid = spawn_sleeper()
    try:
        limits = {} if group.v2 else {"memory_limit": 32 << 20, "pids_limit": 5, "cpu_shares": 256}
        group.create(limits)
        group.join(pid)
        assert group.pids() == [pid]
        assert not group.oom_killed()
        usage = group.usage()
        assert set(usage) == {"memory_bytes", "cpu_ns", "pids"}
        if not group.v2:
            assert Path(group.dirs["pids"], "pids.max").read_text().strip() == "5"
            assert usage["pids"] == 1
        group.remove()  # kills what is inside, then removes every directory
        assert not group.exists()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for directory in Cgroup(parent, "", root=root).dirs.values():
            if os.path.isdir(directory):
                os.rmdir(directory)
