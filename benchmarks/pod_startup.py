"""Pod start-up benchmark of the kubelet, end to end through the API; prints one JSON document.

Run as root from the repository: ``python3 benchmarks/pod_startup.py [--sequential 20] [--burst 100]``.
A server (``--disable-agent``) and one ``k3py agent`` run on a test host (see tests/cluster.py),
with the busybox image already in the node's image store. Measured through a watch on Pods:

- ``sequential``: one pod at a time (``sleep`` in busybox), from just before the create request
  until the watch shows every container running: p50/p99 (goal p50 < 150 ms);
- ``burst``: N pods created at once; time until all are running (goal 100 within 5 s), and
  the CPU seconds the server, the agent and the supervisor (with their children: ``ip``,
  containers' set-up) spent meanwhile — on 2 cores they compete with each other;
- with ``--seccomp-default`` the agent runs every pod under RuntimeDefault (issue #10's
  "pod startup with the hardening on");
- ``rss``: resident memory of k3py's own processes (API server, agent, runtime supervisor and
  its pre-forked zygotes — not the containers) with the burst's pods running (goal < 250 MB).

Everything is torn down at the end (containers, supervisor, test host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from k3py.client.https import client_from_kubeconfig  # noqa: E402
from k3py.client.interface import PODS  # noqa: E402
from k3py.runtime.archive import import_archive  # noqa: E402
from k3py.runtime.images import ImageStore  # noqa: E402
from tests.cluster import TestCluster  # noqa: E402
from tests.kubelet.conftest import TOKEN, AgentNode, busybox_archive, teardown_runtime  # noqa: E402


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[p99_index] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def pod_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "startup"}},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                 "command": ["sleep", "3600"]}]},
    }


def all_running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


async def measure(
    kubeconfig: Path, sequential: int, burst: int, runtime_dir: Path | None = None,
    processes: dict[str, int] | None = None,
) -> dict[str, Any]:
    client = client_from_kubeconfig(kubeconfig)
    created_at: dict[str, float] = {}
    running_at: dict[str, float] = {}
    wake = asyncio.Event()

    async def watcher() -> None:
        listing = await client.list(PODS, "default")
        rv = listing["metadata"]["resourceVersion"]
        while True:
            async for event in client.watch(PODS, "default", resource_version=rv, label_selector="bench=startup"):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                name = obj["metadata"].get("name", "")
                if event["type"] in ("ADDED", "MODIFIED") and name not in running_at and all_running(obj):
                    running_at[name] = time.perf_counter()
                    wake.set()

    watch_task = asyncio.create_task(watcher())
    await asyncio.sleep(0.5)

    async def wait_for(names: list[str], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not all(n in running_at for n in names):
            wake.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{sum(n not in running_at for n in names)} pods not running after {timeout}s")
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                pass

    async def create(name: str) -> None:
        created_at[name] = time.perf_counter()
        await client.create(PODS, pod_body(name), "default")

    try:
        samples = []
        for i in range(sequential):
            name = f"seq-{i}"
            await create(name)
            await wait_for([name], 30)
            samples.append(running_at[name] - created_at[name])
        # The node takes 110 pods: make room for the burst (the kubelet removes the containers).
        await asyncio.gather(*(client.delete(PODS, f"seq-{i}", "default", grace_period_seconds=0)
                               for i in range(sequential)))
        if runtime_dir is not None:
            # Let the node finish removing them, so the burst measures start-up alone.
            from k3py.runtime.containers import ContainerRuntime

            runtime = ContainerRuntime(runtime_dir)
            deadline = time.perf_counter() + 60
            while runtime.list_containers() or runtime.list_sandboxes():
                if time.perf_counter() > deadline:
                    raise TimeoutError("the node did not remove the sequential pods' containers")
                await asyncio.sleep(0.2)
        names = [f"burst-{i}" for i in range(burst)]
        cpu_before = cpu_seconds(processes or {})
        started = time.perf_counter()
        await asyncio.gather(*(create(n) for n in names))
        await wait_for(names, 120)
        burst_seconds = max((running_at[n] for n in names), default=started) - started
        cpu_after = cpu_seconds(processes or {})
        burst_latencies = [running_at[n] - created_at[n] for n in names]
        return {"sequential": {"pods": sequential, **summary(samples)},
                "burst": {"pods": burst, "all_running_s": round(burst_seconds, 3), **summary(burst_latencies),
                          "cpu_seconds": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after
                                          if k in cpu_before}}}
    finally:
        watch_task.cancel()
        await client.close()


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User+system CPU seconds each named process (with its children) has used so far."""
    used: dict[str, float] = {}
    for name, pid in processes.items():
        try:
            root = psutil.Process(pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
            used[name] = total
        except psutil.Error:
            continue
    return used


def k3py_rss(cluster: TestCluster, node: AgentNode) -> dict[str, Any]:
    """RSS (MiB) of the server, the agent, and the runtime supervisor with its zygotes."""
    result: dict[str, float] = {}

    def tree_rss(pid: int, python_only: bool = True) -> float:
        total = 0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                if python_only and "python" not in proc.name():
                    continue
                total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
        return total / (1 << 20)

    assert cluster.process is not None and node.process is not None
    result["server_mib"] = round(tree_rss(cluster.process.pid), 1)
    result["agent_mib"] = round(tree_rss(node.process.pid), 1)
    supervisor_pid = int((node.data_dir / "runtime" / "supervisor.pid").read_text()) if (
        node.data_dir / "runtime" / "supervisor.pid").exists() else None
    if supervisor_pid is None:
        from k3py.runtime.containers import ContainerRuntime

        supervisor_pid = ContainerRuntime(node.data_dir / "runtime").supervisor_pid()
    supervisor = psutil.Process(supervisor_pid) if supervisor_pid else None
    if supervisor is not None:
        own = supervisor.memory_info().rss
        # Zygotes are forks of the supervisor (same command line) not yet turned into containers.
        zygotes = 0
        for child in supervisor.children():
            try:
                if any(part.endswith("supervisor.py") for part in child.cmdline()):
                    zygotes += child.memory_info().rss
            except psutil.Error:
                continue
        result["supervisor_mib"] = round((own + zygotes) / (1 << 20), 1)
    result["total_mib"] = round(sum(v for k, v in result.items() if k.endswith("_mib")), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--seccomp-default", action="store_true",
                        help="run the agent with --seccomp-default (every pod under RuntimeDefault)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k3py-pod-bench-") as tmp:
        base = Path(tmp)
        agent_dir = base / "agent"
        import_archive(ImageStore(agent_dir / "runtime" / "images"), busybox_archive())
        with TestCluster(base, ["--disable-agent", "--token", TOKEN]) as cluster:
            node = AgentNode(cluster, agent_dir, base / "agent.log",
                             extra_args=["--seccomp-default"] if args.seccomp_default else [])
            try:
                node.start()
                node.wait_node_ready()
                from k3py.runtime.containers import ContainerRuntime

                assert cluster.process is not None and node.process is not None
                processes = {"server": cluster.process.pid, "agent": node.process.pid}
                supervisor = ContainerRuntime(agent_dir / "runtime").supervisor_pid()
                if supervisor:
                    processes["supervisor"] = supervisor
                results = cluster.in_netns(lambda: asyncio.run(measure(
                    cluster.kubeconfig, args.sequential, args.burst, agent_dir / "runtime", processes)))
                results["rss"] = k3py_rss(cluster, node)
                results["goals"] = {
                    "sequential_p50_below_150ms": results["sequential"]["p50_ms"] < 150,
                    "burst_all_running_within_5s": results["burst"]["all_running_s"] < 5,
                    "rss_below_250MB": results["rss"]["total_mib"] * 1.048576 < 250,
                }
                print(json.dumps(results, indent=2))
            finally:
                node.stop()
                teardown_runtime(agent_dir)


if __name__ == "__main__":
    main()
