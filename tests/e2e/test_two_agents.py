"""Two k3py nodes on one machine never touch each other's containers (issue #10).

Each cluster here is a `k3py server` with its in-process agent on a test host of its own
(network and mount namespaces), as the multi-node tests will run three; the machine's cgroup
hierarchy is shared. Before the fix both runtimes used the cgroup parent `k3py`, and a
supervisor starting for the second node removed the first node's pre-forked zygotes' `pool-*`
groups and killed the zygotes. Now each runtime data dir owns its parent; the test starts and
restarts the second node's supervisor (SIGKILL, as a crash) and checks that the first node's
supervisor, zygotes, pool groups and pods are untouched, and that both nodes keep starting pods.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.runtime.cgroups import Cgroup
from k3py.runtime.containers import ContainerRuntime
from tests.cluster import TestCluster
from tests.e2e.test_kubectl_workloads import _node_ready, _wait_running
from tests.images import busybox_archive


def _start_node(base: Path) -> TestCluster:
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(base / "agent" / "runtime" / "images"), busybox_archive())
    cluster = TestCluster(base, agent=True)
    cluster.__enter__()
    cluster.wait_for(lambda: _node_ready(cluster), timeout=60, interval=0.2, what=f"a Ready node\n{cluster.server_log()}")
    return cluster


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[TestCluster, TestCluster]]:
    first = _start_node(tmp_path / "first")
    try:
        second = _start_node(tmp_path / "second")
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def _run_pod(cluster: TestCluster, name: str) -> dict:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [
            {"name": name, "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]},
    }))  # fmt: skip
    return _wait_running(cluster, name)


class RuntimeView:
    """What the host shows of one node's runtime: its supervisor, zygotes and pool groups."""

    def __init__(self, cluster: TestCluster) -> None:
        self.runtime = ContainerRuntime(cluster.agent_dir / "runtime")

    def supervisor(self) -> int:
        pid = self.runtime.supervisor_pid()
        assert pid is not None, "no supervisor answers"
        return pid

    def zygotes(self) -> set[int]:
        pid = self.supervisor()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "k3py-zygote"}

    def pool_groups(self) -> set[str]:
        names: set[str] = set()
        for directory in Cgroup(self.runtime.cgroup_parent, "").dirs.values():
            if os.path.isdir(directory):
                names.update(n for n in os.listdir(directory) if n.startswith("pool-"))
        return names


def _restart_count(cluster: TestCluster, name: str) -> int:
    pod = cluster.kubectl_json("get", "pod", name)
    return pod["status"]["containerStatuses"][0]["restartCount"]


def test_a_second_node_on_the_machine_leaves_the_first_alone(two_nodes: tuple[TestCluster, TestCluster]) -> None:
    first, second = two_nodes
    one, two = RuntimeView(first), RuntimeView(second)
    assert one.runtime.cgroup_parent != two.runtime.cgroup_parent
    _run_pod(first, "on-first")
    first.wait_for(lambda: len(one.zygotes()) >= 1 and one.pool_groups(), timeout=30, what="the first node's zygote pool")
    supervisor, zygotes, pools = one.supervisor(), one.zygotes(), one.pool_groups()

    _run_pod(second, "on-second")
    # The second node's supervisor crashes and a new one starts (it adopts its containers and
    # cleans up after its predecessor: only its own groups).
    os.kill(two.supervisor(), signal.SIGKILL)
    second.wait_for(lambda: two.runtime.supervisor_pid() is None, timeout=10, what="the killed supervisor gone")
    _run_pod(second, "after-crash")  # the kubelet starts a supervisor again for this pod
    assert _restart_count(second, "on-second") == 0

    assert one.supervisor() == supervisor
    assert zygotes <= one.zygotes(), "the first node's zygotes were killed"
    assert all(Path(f"/proc/{pid}").exists() for pid in zygotes)
    assert pools <= one.pool_groups(), "the first node's pool groups were removed"
    assert _restart_count(first, "on-first") == 0
    _run_pod(first, "still-starting")  # a zygote of the first node starts it
