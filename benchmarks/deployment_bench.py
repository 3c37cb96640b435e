"""Benchmark a Deployment rollout end to end on a real k3py server with simulated nodes.

Prints one JSON document to stdout. Not a test. The server (store, API server, controllers,
scheduler, simulated nodes — all in-process, as ``k3py server --simulated-nodes N`` runs
them) starts in this process on a free loopback port; the benchmark drives it over HTTPS with
the k3py client, like an external client would:

1. create a Deployment of R replicas and time until ``availableReplicas == R``
   (every pod created, scheduled, bound and Running+Ready);
2. change its image and time the rolling update until the rollout is complete;
3. delete it and time until every pod is gone (garbage collection + graceful deletion).

Each phase also reports the CPU seconds this process spent (the machine may be shared, so
CPU time is the steadier number), and ``rss_mb_after_create`` is this process's resident
memory once every pod is available — server, informers and the benchmark's small client.

``--kwok`` instead runs kwok's CI bar (issue #4): 1,000 simulated nodes, then 10 Deployments
of 1,000 replicas each (10,000 pods) created at once; it reports the seconds until all nodes
are Ready and until every pod is Running (and Ready), plus RSS at that point.

    python benchmarks/deployment_bench.py [--nodes 100] [--replicas 1000]
    python benchmarks/deployment_bench.py --kwok [--nodes 1000] [--deployments 10] [--replicas 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from k3py.api.errors import ApiError
from k3py.client.https import client_from_kubeconfig
from k3py.client.interface import DEPLOYMENTS, NODES, PODS, Client, Request
from k3py.server.config import ServerConfig
from k3py.server.main import run_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def deployment(replicas: int, image: str, name: str = "bench") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "c", "image": image, "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}},
        },
    }


async def wait_until(check: Any, timeout: float) -> float:
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


async def rolled_out(client: Client, replicas: int, image: str) -> bool:
    d = await client.get(DEPLOYMENTS, "bench", "default")
    st = d.get("status") or {}
    return (st.get("observedGeneration", 0) >= d["metadata"]["generation"] and st.get("updatedReplicas") == replicas
            and st.get("availableReplicas") == replicas and st.get("replicas") == replicas
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image)


class BenchServer:
    """A k3py server with simulated nodes running in this process, and a client for it."""

    def __init__(self, tmp: str, nodes: int) -> None:
        self.kubeconfig = Path(tmp) / "kubeconfig.yaml"
        self.config = ServerConfig(data_dir=Path(tmp) / "server", bind_address="127.0.0.1",
                                   https_listen_port=_free_port(), write_kubeconfig=self.kubeconfig,
                                   simulated_nodes=nodes, sqlite_synchronous="NORMAL", log_level="WARNING")
        self.nodes = nodes
        self.stop = asyncio.Event()

    async def start(self) -> tuple[Client, float, float]:
        """Start the server; returns the client, seconds until all Nodes exist and until all are Ready."""
        self.task = asyncio.create_task(run_server(self.config, self.stop))
        started = time.perf_counter()
        while not self.kubeconfig.exists():  # noqa: ASYNC110 - the server writes it when ready
            await asyncio.sleep(0.05)
        self.client = client_from_kubeconfig(self.kubeconfig)
        registered = ready = 0.0
        while True:
            try:
                listed = (await self.client.list(NODES))["items"]
            except ApiError:
                listed = []
            now = time.perf_counter() - started
            if len(listed) >= self.nodes and not registered:
                registered = now
            if len(listed) >= self.nodes and all(_node_ready(n) for n in listed):
                ready = now
                break
            if now > 600:
                raise TimeoutError("nodes did not become Ready")
            await asyncio.sleep(0.05)
        return self.client, registered, ready

    async def close(self) -> None:
        await self.client.close()
        self.stop.set()
        await self.task


def _node_ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


async def bench(nodes: int, replicas: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="k3py-bench-") as tmp:
        server = BenchServer(tmp, nodes)
        cpu0 = _cpu_seconds()
        client, startup, _ready = await server.start()
        try:
            cpu1 = _cpu_seconds()
            await client.create(DEPLOYMENTS, deployment(replicas, "nginx:1"), "default")
            create = await wait_until(lambda: rolled_out(client, replicas, "nginx:1"), 1800)
            cpu2, rss = _cpu_seconds(), _rss_mb()
            await client.patch(DEPLOYMENTS, "bench", {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "nginx:2"}]}}}}, "default", patch_type="strategic")
            update = await wait_until(lambda: rolled_out(client, replicas, "nginx:2"), 1800)
            cpu3 = _cpu_seconds()
            await client.delete(DEPLOYMENTS, "bench", "default", propagation_policy="Background")

            async def pods_gone() -> bool:
                # One pod is enough to know some remain: do not decode thousands each poll.
                page = await client.transport.call(Request("list", PODS, "default",
                                                           query={"labelSelector": "app=bench", "limit": "1"}))
                return not page.get("items")

            delete = await wait_until(pods_gone, 1800)
            cpu4 = _cpu_seconds()
        finally:
            await server.close()
    return {
        "nodes": nodes, "replicas": replicas,
        "startup_seconds": round(startup, 2), "startup_cpu_seconds": round(cpu1 - cpu0, 1),
        "create_seconds": round(create, 2), "create_pods_per_second": round(replicas / create, 1),
        "create_cpu_seconds": round(cpu2 - cpu1, 1), "rss_mb_after_create": rss,
        "rolling_update_seconds": round(update, 2), "update_pods_per_second": round(replicas / update, 1),
        "update_cpu_seconds": round(cpu3 - cpu2, 1),
        "delete_seconds": round(delete, 2), "delete_pods_per_second": round(replicas / delete, 1),
        "delete_cpu_seconds": round(cpu4 - cpu3, 1),
    }


async def kwok(nodes: int, deployments: int, replicas: int) -> dict[str, Any]:
    """kwok's CI bar: all nodes Ready, then ``deployments`` x ``replicas`` pods all Running."""
    names = [f"kwok-{i}" for i in range(deployments)]
    total = deployments * replicas
    with tempfile.TemporaryDirectory(prefix="k3py-bench-") as tmp:
        server = BenchServer(tmp, nodes)
        client, registered, ready = await server.start()
        try:
            cpu1 = _cpu_seconds()
            start = time.perf_counter()
            await asyncio.gather(*(client.create(DEPLOYMENTS, deployment(replicas, "nginx:1", n), "default")
                                   for n in names))

            async def all_available() -> bool:
                listed = (await client.list(DEPLOYMENTS, "default"))["items"]
                return sum(int((d.get("status") or {}).get("availableReplicas") or 0)
                           for d in listed if d["metadata"]["name"] in names) >= total

            await wait_until(all_available, 1800)
            running_seconds = time.perf_counter() - start
            cpu2, rss = _cpu_seconds(), _rss_mb()
            # Confirm from the pods themselves (available implies Running and Ready).
            pods = (await client.list(PODS, "default"))["items"]
            running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
        finally:
            await server.close()
    return {
        "mode": "kwok", "nodes": nodes, "deployments": deployments, "replicas_each": replicas, "pods": total,
        "nodes_registered_seconds": round(registered, 2), "nodes_ready_seconds": round(ready, 2),
        "all_running_seconds": round(running_seconds, 2), "pods_running": running,
        "pods_per_second": round(total / running_seconds, 1),
        "cpu_seconds": round(cpu2 - cpu1, 1), "rss_mb_all_running": rss,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=None, help="default 100; with --kwok 1000")
    parser.add_argument("--replicas", type=int, default=None,
                        help="replicas (default 1000; with --kwok: per Deployment, default 1000)")
    parser.add_argument("--kwok", action="store_true", help="kwok's CI bar: 1,000 nodes, 10 x 1,000 pods")
    parser.add_argument("--deployments", type=int, default=10, help="with --kwok: how many Deployments")
    args = parser.parse_args()
    if args.kwok:
        nodes = args.nodes or 1000
        result = await kwok(nodes, args.deployments, args.replicas or 1000)
    else:
        result = await bench(args.nodes or 100, args.replicas or 1000)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
