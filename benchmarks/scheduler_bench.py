"""Benchmark the scheduler: pods bound per second with thousands of nodes.

Prints one JSON document to stdout. Not a test. Two measurements:

1. ``decisions``: the scheduling algorithm alone (filter + score + assume) on N nodes — how
   many placement decisions a second the scheduler's loop can make;
2. ``end_to_end``: the real :class:`Scheduler` (informers, work queue, binding calls, events)
   against the in-memory transport (k3py.client.memory), from the moment P pending pods exist
   until every one has ``spec.nodeName`` set. This includes the client, informer and
   in-memory "server" costs in the same process, but not HTTP or the store.

Both report wall-clock and process-CPU rates: on a shared 2-core machine the wall-clock rate
varies with other load, the per-CPU-second rate much less. Both run twice: with bare pods (no
owner: only least-allocated scores, the fast path) and, under ``*_owned``, with the pods split
among ``--owners`` ReplicaSets (ownerReferences), so every decision after an owner's first
also scores upstream's default topology spreading over that owner's pods.

3. ``real_server`` (with ``--real-server``): a real k3py server in this process with N
   simulated nodes; P pending pods are created over HTTPS (32 at a time) and the clock stops
   when every one is bound. The scheduler runs inside the server on the in-process transport,
   so this shows whether scheduling keeps pace with pod creation through the API.

    python benchmarks/scheduler_bench.py [--nodes 5000] [--pods 10000] [--owners 50] [--real-server]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from k3py.client.informer import InformerFactory
from k3py.client.interface import NODES, PODS, Client
from k3py.client.memory import MemoryTransport
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import NodeShape, node_object


def pending_pod(i: int, owners: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"p-{i}", "namespace": "default"}
    if owners:
        rs = i % owners
        meta["labels"] = {"app": f"rs-{rs}"}
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"rs-{rs}",
                                    "uid": f"00000000-0000-0000-0000-{rs:012d}", "controller": True}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


async def decisions(nodes: int, pods: int, owners: int = 0) -> dict[str, Any]:
    transport = MemoryTransport()
    client = Client(transport)
    sched = Scheduler(client, InformerFactory(client))
    shape = NodeShape(cpu="64", memory="256Gi", pods="250")
    for i in range(1, nodes + 1):
        sched._node_added(node_object(f"n-{i}", i, shape))
    pod_objs = [pending_pod(i, owners) for i in range(pods)]
    start, cpu_start = time.perf_counter(), time.process_time()
    placed = 0
    for pod in pod_objs:
        if owners:
            sched.pod_informer.cache.upsert(pod)  # _place reads the pod's owner from the cache
        node, _ = sched.find_node(pod)
        if node is not None:
            sched._place(f"default/{pod['metadata']['name']}", node, *_reqs(pod))
            placed += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "nodes": nodes,
        "pods": pods,
        "placed": placed,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "decisions_per_second": round(pods / elapsed),
        "decisions_per_cpu_second": round(pods / cpu),
    }


def _reqs(pod: dict[str, Any]) -> tuple[Any, Any]:
    from k3py.server.scheduler.nodeinfo import pod_host_ports, pod_requests

    return pod_requests(pod), pod_host_ports(pod)


async def end_to_end(nodes: int, pods: int, owners: int = 0) -> dict[str, Any]:
    transport = MemoryTransport(history=4 * (nodes + pods) + 1000)
    client = Client(transport)
    shape = NodeShape(cpu="64", memory="256Gi", pods="250")
    for i in range(1, nodes + 1):
        await client.create(NODES, node_object(f"n-{i}", i, shape))
    informers = InformerFactory(client)
    sched = Scheduler(client, informers)
    informers.start()
    await informers.wait_synced()
    task = asyncio.create_task(sched.run())
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(pods):
        await client.create(PODS, pending_pod(i, owners), "default")
    while sched.scheduled < pods:  # noqa: ASYNC110 - polling a counter the scheduler bumps
        await asyncio.sleep(0.01)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await informers.stop()
    bound = sum(1 for p in transport.objects[("", "pods")].values() if p["spec"].get("nodeName"))
    return {
        "nodes": nodes,
        "pods": pods,
        "bound": bound,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "pods_per_second": round(pods / elapsed),
        "pods_per_cpu_second": round(pods / cpu),
    }


async def real_server(nodes: int, pods: int) -> dict[str, Any]:
    import socket
    import tempfile
    from pathlib import Path

    from k3py.client.https import client_from_kubeconfig
    from k3py.server.config import ServerConfig
    from k3py.server.main import run_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="k3py-sched-bench-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig.yaml"
        config = ServerConfig(data_dir=Path(tmp) / "server", bind_address="127.0.0.1", https_listen_port=port,
                              write_kubeconfig=kubeconfig, simulated_nodes=nodes, sqlite_synchronous="NORMAL",
                              log_level="WARNING")
        stop = asyncio.Event()
        server = asyncio.create_task(run_server(config, stop))
        while not kubeconfig.exists():  # noqa: ASYNC110 - the server writes it when ready
            await asyncio.sleep(0.05)
        client = client_from_kubeconfig(kubeconfig)
        try:
            while len((await client.list(NODES))["items"]) < nodes:  # noqa: ASYNC110 - polling the API
                await asyncio.sleep(0.5)
            limit = asyncio.Semaphore(32)

            async def create(i: int) -> None:
                async with limit:
                    await client.create(PODS, pending_pod(i), "default")

            start = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(pods)))
            created = time.perf_counter() - start
            while True:
                items = (await client.list(PODS, "default"))["items"]
                if sum(1 for p in items if p["spec"].get("nodeName")) == pods:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - start
        finally:
            await client.close()
            stop.set()
            await server
    return {"nodes": nodes, "pods": pods, "create_seconds": round(created, 2), "all_bound_seconds": round(elapsed, 2),
            "pods_bound_per_second": round(pods / elapsed, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--owners", type=int, default=50, help="ReplicaSets owning the pods of *_owned (0: skip)")
    parser.add_argument("--real-server", action="store_true", help="also measure inside a real server")
    args = parser.parse_args()
    result = {
        "decisions": await decisions(args.nodes, args.pods),
        "end_to_end": await end_to_end(args.nodes, args.pods),
    }
    if args.owners:
        result["decisions_owned"] = await decisions(args.nodes, args.pods, args.owners)
        result["end_to_end_owned"] = await end_to_end(args.nodes, args.pods, args.owners)
    if args.real_server:
        result["real_server"] = await real_server(args.nodes, min(args.pods, 2000))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
