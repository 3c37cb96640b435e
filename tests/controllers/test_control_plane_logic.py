"""The whole control plane (run_control_plane) against the in-memory API: nodes register,
pods get scheduled and run, deletes cascade, namespaces finalize, accounts appear."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from k3py.client.interface import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SERVICEACCOUNTS,
    Client,
)
from k3py.client.memory import MemoryTransport
from k3py.server.controllers.manager import run_control_plane


class Running:
    def __init__(self) -> None:
        self.transport = MemoryTransport()
        self.client = Client(self.transport)
        self.stop = asyncio.Event()

    def get(self, resource: Any, ns: str, name: str) -> dict[str, Any] | None:
        return self.transport.peek(resource, ns, name)

    async def until(self, cond: Any, timeout: float = 10.0, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (value := cond()):
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}")
            await asyncio.sleep(0.01)
        return value


@pytest.fixture
async def cp() -> AsyncIterator[Running]:
    running = Running()
    await running.client.create(NAMESPACES, {"metadata": {"name": "default"}})
    task = asyncio.create_task(run_control_plane(running.client, simulated_nodes=3, stop=running.stop,
                                                 root_ca=b"-----BEGIN CERTIFICATE-----\n"))
    try:
        yield running
    finally:
        running.stop.set()
        await asyncio.wait_for(task, 10)
        await running.transport.close()


def deployment(replicas: int = 3, cpu: str = "100m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx",
                                                  "resources": {"requests": {"cpu": cpu}}}]}},
        },
    }


async def test_deployment_pods_are_scheduled_and_run_on_simulated_nodes(cp: Running) -> None:
    nodes = await cp.until(lambda: len(cp.transport.all(NODES)) == 3 and cp.transport.all(NODES))
    assert sorted(n["metadata"]["name"] for n in nodes) == ["simnode-1", "simnode-2", "simnode-3"]
    assert all(c["status"] == "True" for n in nodes for c in n["status"]["conditions"] if c["type"] == "Ready")
    await cp.until(lambda: cp.get(LEASES, "kube-node-lease", "simnode-1"), what="node lease")
    await cp.client.create(DEPLOYMENTS, deployment(replicas=6), "default")
    pods = await cp.until(lambda: (ps := cp.transport.all(PODS, "default")) and len(ps) == 6
                          and all(p["status"].get("phase") == "Running" for p in ps) and ps, what="6 running pods")
    # Least-allocated scoring spreads equal pods evenly.
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert per_node == {"simnode-1": 2, "simnode-2": 2, "simnode-3": 2}
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 6 and all(ip.startswith("100.65.") and ip.count(".") == 3 for ip in ips)
    d = await cp.until(lambda: (d := cp.get(DEPLOYMENTS, "default", "web"))["status"].get("availableReplicas") == 6 and d)
    assert d["status"]["readyReplicas"] == 6
    events = await cp.until(lambda: [e for e in cp.transport.all(EVENTS, "default") if e["reason"] == "Scheduled"])
    assert events[0]["message"].startswith("Successfully assigned default/web-")
    assert events[0]["source"] == {"component": "default-scheduler"}
    assert cp.get(LEASES, "kube-system", "kube-scheduler")["spec"]["holderIdentity"]


async def test_unschedulable_pod_gets_condition_and_event(cp: Running) -> None:
    await cp.until(lambda: len(cp.transport.all(NODES)) == 3)
    pod = {"metadata": {"name": "big"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "64"}}}]}}
    await cp.client.create(PODS, pod, "default")
    message = ("0/3 nodes are available: 3 Insufficient cpu."
               " preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    cond = await cp.until(lambda: next((c for c in cp.get(PODS, "default", "big")["status"].get("conditions", [])
                                        if c["type"] == "PodScheduled"), None))
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable" and cond["message"] == message
    event = await cp.until(lambda: [e for e in cp.transport.all(EVENTS, "default") if e["reason"] == "FailedScheduling"])
    assert event[0]["message"] == message and event[0]["type"] == "Warning"


async def test_background_delete_cascades_to_replicasets_and_pods(cp: Running) -> None:
    await cp.client.create(DEPLOYMENTS, deployment(replicas=2), "default")
    await cp.until(lambda: len(cp.transport.all(PODS, "default")) == 2)
    await cp.client.delete(DEPLOYMENTS, "web", "default", propagation_policy="Background")
    await cp.until(lambda: not cp.transport.all(REPLICASETS, "default") and not cp.transport.all(PODS, "default"),
                   what="replicasets and pods collected")


async def test_foreground_delete_waits_for_dependents(cp: Running) -> None:
    await cp.client.create(DEPLOYMENTS, deployment(replicas=2), "default")
    await cp.until(lambda: len(cp.transport.all(PODS, "default")) == 2)
    await cp.client.delete(DEPLOYMENTS, "web", "default", propagation_policy="Foreground")
    await cp.until(lambda: cp.get(DEPLOYMENTS, "default", "web") is None, what="deployment gone")
    assert not cp.transport.all(REPLICASETS, "default")
    assert not cp.transport.all(PODS, "default")


async def test_orphan_delete_keeps_replicasets(cp: Running) -> None:
    await cp.client.create(DEPLOYMENTS, deployment(replicas=1), "default")
    await cp.until(lambda: len(cp.transport.all(PODS, "default")) == 1)
    await cp.client.delete(DEPLOYMENTS, "web", "default", propagation_policy="Orphan")
    await cp.until(lambda: cp.get(DEPLOYMENTS, "default", "web") is None)
    (rs,) = cp.transport.all(REPLICASETS, "default")
    assert not rs["metadata"].get("ownerReferences")
    assert len(cp.transport.all(PODS, "default")) == 1


async def test_namespace_gets_default_account_and_root_ca_and_terminates(cp: Running) -> None:
    await cp.client.create(NAMESPACES, {"metadata": {"name": "team"}})
    await cp.until(lambda: cp.get(SERVICEACCOUNTS, "team", "default"))
    cm = await cp.until(lambda: cp.get(CONFIGMAPS, "team", "kube-root-ca.crt"))
    assert cm["data"] == {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}
    await cp.client.create(DEPLOYMENTS, {**deployment(replicas=1), "metadata": {"name": "web", "namespace": "team"}}, "team")
    await cp.until(lambda: len(cp.transport.all(PODS, "team")) == 1)
    await cp.client.delete(NAMESPACES, "team")
    await cp.until(lambda: cp.get(NAMESPACES, "", "team") is None, what="namespace finalized")
    assert not cp.transport.all(PODS, "team") and not cp.transport.all(DEPLOYMENTS, "team")
