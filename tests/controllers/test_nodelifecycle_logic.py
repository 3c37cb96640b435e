"""Node lifecycle: silent nodes become Unknown and tainted, pods are evicted (in-memory API)."""

from __future__ import annotations

import asyncio
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


async def test_grace_period_is_40_seconds(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "kube-node-lease"}})
    await add_node(plane, "quiet", silent_for=30)
    await add_node(plane, "gone", silent_for=50)
    (controller,) = await plane.start(NodeLifecycleController)
    await plane.until(lambda: ready(plane.transport.peek(NODES, "", "gone")) == "Unknown", what="50 s silent: Unknown")
    await plane.reconcile(controller, "quiet")
    quiet = plane.transport.peek(NODES, "", "quiet")
    assert ready(quiet) == "True" and not quiet["spec"].get("taints")
    # The controller wakes when the quiet node's 40 s run out (about 10 s from now), not later.
    wait = await plane.reconcile(controller, "quiet")
    assert wait is not None and 5 < wait <= 11


async def test_not_ready_node_gets_the_not_ready_taints(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "kube-node-lease"}})
    await add_node(plane, "sick", silent_for=0)
    node = plane.transport.peek(NODES, "", "sick")
    for cond in node["status"]["conditions"]:
        if cond["type"] == "Ready":
            cond.update({"status": "False", "reason": "KubeletNotReady"})
    await plane.client.update_status(NODES, node)
    await plane.start(NodeLifecycleController)
    sick = await plane.until(lambda: len((n := plane.transport.peek(NODES, "", "sick"))["spec"].get("taints") or []) == 2 and n)
    assert {(t["key"], t["effect"]) for t in sick["spec"]["taints"]} == {
        ("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")}
    assert next(t for t in sick["spec"]["taints"] if t["effect"] == "NoExecute")["timeAdded"]


async def test_pods_are_evicted_after_their_toleration_seconds_300_by_default(plane) -> None:
    from k3py.api.defaults import apply_defaults
    from k3py.api.resources import builtin_resources

    await plane.client.create(NAMESPACES, {"metadata": {"name": "kube-node-lease"}})
    await add_node(plane, "dead", silent_for=600)
    # The node has been unreachable for a while: its NoExecute taint was added 298 s ago (the
    # stamp has whole seconds, so 298-299 s).
    node = plane.transport.peek(NODES, "", "dead")
    for cond in node["status"]["conditions"]:
        cond.update({"status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."})
    await plane.client.update_status(NODES, node)
    node = plane.transport.peek(NODES, "", "dead")
    added = (datetime.now(UTC) - timedelta(seconds=298)).strftime("%Y-%m-%dT%H:%M:%SZ")
    node["spec"]["taints"] = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
                              {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": added}]
    await plane.client.update(NODES, node)
    pods_info = builtin_resources().lookup("", "v1", "pods")
    defaulted = pod("defaulted", "dead")
    apply_defaults(pods_info, defaulted)  # what the API server's defaulting gives every pod
    assert {t.get("tolerationSeconds") for t in defaulted["spec"]["tolerations"]} == {300}
    await plane.client.create(PODS, defaulted, "default")
    patient = pod("patient", "dead", [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                       "effect": "NoExecute", "tolerationSeconds": 3600}])
    await plane.client.create(PODS, patient, "default")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await plane.start(NodeLifecycleController)

    def evicted(name: str) -> bool:
        p = plane.transport.peek(PODS, "default", name)
        return p is None or bool(p["metadata"].get("deletionTimestamp"))

    # 300 s after the taint — one to two seconds from now, never at once.
    await plane.until(lambda: evicted("defaulted"), timeout=5, what="defaulted pod evicted at 300 s")
    assert loop.time() - start > 0.9
    assert not evicted("patient")
