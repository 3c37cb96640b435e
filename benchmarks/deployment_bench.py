"""Benchmark a Deployment rollout end to end on a real k3py server with simulated nodes.

Prints one JSON document to stdout. Not a test. The server (store, API server, controllers,
scheduler, simulated nodes — all in-process, as ``k3py server --simulated-nodes N`` runs
them) starts in this process on a free loopback port; the benchmark drives it over HTTPS with
the k3py client, like an external client would:

1. create a Deployment of R replicas and time until ``availableReplicas == R``
   (every pod created, scheduled, bound and Running+Ready);
2. change its image and time the rolling update until the rollout is complete;
3. delete it and time until every pod is gone (garbage collection + graceful deletion).

    python benchmarks/deployment_bench.py [--nodes 100] [--replicas 1000]
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

from k3py.api.errors import ApiError
from k3py.client.https import client_from_kubeconfig
from k3py.client.interface import DEPLOYMENTS, NODES, PODS, Client
from k3py.server.config import ServerConfig
from k3py.server.main import run_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment(replicas: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"containers": [
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


async def bench(nodes: int, replicas: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="k3py-bench-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig.yaml"
        config = ServerConfig(data_dir=Path(tmp) / "server", bind_address="127.0.0.1", https_listen_port=_free_port(),
                              write_kubeconfig=kubeconfig, simulated_nodes=nodes, sqlite_synchronous="NORMAL",
                              log_level="WARNING")
        stop = asyncio.Event()
        server = asyncio.create_task(run_server(config, stop))
        started = time.perf_counter()
        while not kubeconfig.exists():  # noqa: ASYNC110 - the server writes it when ready
            await asyncio.sleep(0.05)
        client = client_from_kubeconfig(kubeconfig)
        try:
            async def nodes_ready() -> bool:
                try:
                    listed = await client.list(NODES)
                except ApiError:
                    return False
                return len(listed["items"]) >= nodes

            startup = await wait_until(nodes_ready, 600) + (time.perf_counter() - started)
            await client.create(DEPLOYMENTS, deployment(replicas, "nginx:1"), "default")
            create = await wait_until(lambda: rolled_out(client, replicas, "nginx:1"), 1800)
            await client.patch(DEPLOYMENTS, "bench", {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "nginx:2"}]}}}}, "default", patch_type="strategic")
            update = await wait_until(lambda: rolled_out(client, replicas, "nginx:2"), 1800)
            await client.delete(DEPLOYMENTS, "bench", "default", propagation_policy="Background")

            async def pods_gone() -> bool:
                return not (await client.list(PODS, "default", label_selector="app=bench"))["items"]

            delete = await wait_until(pods_gone, 1800)
        finally:
            await client.close()
            stop.set()
            await server
    return {
        "nodes": nodes, "replicas": replicas,
        "startup_seconds": round(startup, 2),
        "create_seconds": round(create, 2), "create_pods_per_second": round(replicas / create, 1),
        "rolling_update_seconds": round(update, 2), "update_pods_per_second": round(replicas / update, 1),
        "delete_seconds": round(delete, 2), "delete_pods_per_second": round(replicas / delete, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(await bench(args.nodes, args.replicas), indent=2))


if __name__ == "__main__":
    asyncio.run(main())
