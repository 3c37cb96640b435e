"""Node lifecycle: silent nodes become Unknown and tainted, pods are evicted (in-memory API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from k3py.api.meta import now_rfc3339_micro
from k3py.client.interface import LEASES, NAMESPACES, NODES, PODS
from k3py.server.controllers.nodelifecycle import NodeLifecycleController
from k3py.server.simnodes.kubelet import NodeShape, node_object


def ready(node: dict[str, Any]) -> str:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"]


async def add_node(plane, name: str, silent_for: float) -> None:
    node = node_object(name, 1, NodeShape())
    beat = (datetime.now(UTC) - timedelta(seconds=silent_for)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for cond in node["status"]["conditions"]:
        cond["lastHeartbeatTime"] = beat
    await plane.client.create(NODES, node)
    lease = {"metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                      "renewTime": now_rfc3339_micro(datetime.now(UTC) - timedelta(seconds=silent_for))}}
    await plane.client.create(LEASES, lease, "kube-node-lease")


def pod(name: str, node: str, tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "tolerations": tolerations or [],
                                                 "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


async def test_silent_node_is_marked_unknown_tainted_and_drained(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "kube-node-lease"}})
    await add_node(plane, "alive", silent_for=0)
    await add_node(plane, "dead", silent_for=120)
    await plane.client.create(PODS, pod("victim", "dead"), "default")
    forever = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    await plane.client.create(PODS, pod("stays", "dead", forever), "default")
    await plane.client.create(PODS, pod("healthy", "alive"), "default")
    await plane.start(NodeLifecycleController)
    dead = await plane.until(lambda: (n := plane.transport.peek(NODES, "", "dead")) and ready(n) == "Unknown"
                             and len(n["spec"].get("taints") or []) == 2 and n, what="dead node tainted")
    assert {(t["key"], t["effect"]) for t in dead["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
    cond = next(c for c in dead["status"]["conditions"] if c["type"] == "Ready")
    assert cond["reason"] == "NodeStatusUnknown" and cond["message"] == "Kubelet stopped posting node status."
    await plane.until(lambda: plane.transport.peek(PODS, "default", "victim") is None
                      or plane.transport.peek(PODS, "default", "victim")["metadata"].get("deletionTimestamp"),
                      what="untolerating pod evicted")
    stays = plane.transport.peek(PODS, "default", "stays")
    assert not stays["metadata"].get("deletionTimestamp")
    assert next(c for c in stays["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    alive = plane.transport.peek(NODES, "", "alive")
    assert ready(alive) == "True" and not alive["spec"].get("taints")
    assert plane.transport.peek(PODS, "default", "healthy")["metadata"].get("deletionTimestamp") is None

    # The node comes back: Ready again, taints removed.
    node = plane.transport.peek(NODES, "", "dead")
    for c in node["status"]["conditions"]:
        c.update({"status": "True" if c["type"] == "Ready" else "False", "lastHeartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    await plane.client.update_status(NODES, node)
    await plane.until(lambda: not plane.transport.peek(NODES, "", "dead")["spec"].get("taints"), what="taints removed")
