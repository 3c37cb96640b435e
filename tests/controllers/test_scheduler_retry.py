"""The running scheduler retries unschedulable pods when the cluster changes, and says so.

A real :class:`Scheduler` task over the in-memory API (informers, work queue, bindings,
events). Each test makes a pod unschedulable, checks the ``PodScheduled=False`` condition and
the ``FailedScheduling`` Warning in upstream's wording, then changes the cluster the way that
should cure it and expects the pod bound well before the 10 s fallback retry would fire — so a
pass shows the change itself triggered the retry.
"""

from __future__ import annotations

from typing import Any

from k3py.client.interface import EVENTS, NODES, PODS
from k3py.server.scheduler.scheduler import UNSCHEDULABLE_FLUSH, Scheduler
from k3py.server.simnodes.kubelet import NodeShape, node_object
from tests.controllers.conftest import Plane

# Comfortably below the fallback flush: a retry this fast came from the cluster change.
PROMPT = 4.0
assert PROMPT < UNSCHEDULABLE_FLUSH


def pod(name: str, cpu: str = "100m", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}], **spec}}


def node(name: str, index: int, cpu: str = "2", labels: dict[str, str] | None = None) -> dict[str, Any]:
    n = node_object(name, index, NodeShape(cpu=cpu, memory="4Gi"))
    n["metadata"]["labels"].update(labels or {})
    return n


async def start(plane: Plane, *nodes: dict[str, Any]) -> Scheduler:
    for n in nodes:
        await plane.client.create(NODES, n)
    (sched,) = await plane.start(Scheduler)
    assert isinstance(sched, Scheduler)
    return sched


def bound_to(plane: Plane, name: str) -> str:
    current = plane.transport.peek(PODS, "default", name)
    return (current or {}).get("spec", {}).get("nodeName") or ""


async def expect_unschedulable(plane: Plane, name: str, message: str) -> None:
    def condition() -> dict[str, Any] | None:
        current = plane.transport.peek(PODS, "default", name) or {}
        return next((c for c in current.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"), None)

    cond = await plane.until(condition, what=f"PodScheduled condition on {name}")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", message)
    events = await plane.until(lambda: [e for e in plane.transport.all(EVENTS, "default")
                                        if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == name],
                               what="FailedScheduling event")
    assert events[0]["type"] == "Warning" and events[0]["message"] == message
    assert events[0]["source"] == {"component": "default-scheduler"}


async def expect_scheduled(plane: Plane, name: str, node_name: str) -> None:
    await plane.until(lambda: bound_to(plane, name), timeout=PROMPT, what=f"{name} bound")
    assert bound_to(plane, name) == node_name
    events = await plane.until(lambda: [e for e in plane.transport.all(EVENTS, "default")
                                        if e["reason"] == "Scheduled" and e["involvedObject"]["name"] == name],
                               what="Scheduled event")
    assert events[0]["type"] == "Normal"
    assert events[0]["message"] == f"Successfully assigned default/{name} to {node_name}"


async def test_new_node_makes_pending_pod_schedulable(plane: Plane) -> None:
    await start(plane, node("small", 1, cpu="2"))
    await plane.client.create(PODS, pod("big", cpu="8"), "default")
    await expect_unschedulable(plane, "big", "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
    await plane.client.create(NODES, node("large", 2, cpu="16"))
    await expect_scheduled(plane, "big", "large")


async def test_deleted_pod_frees_room(plane: Plane) -> None:
    await start(plane, node("only", 1, cpu="1"))
    await plane.client.create(PODS, pod("first", cpu="800m"), "default")
    await plane.until(lambda: bound_to(plane, "first"), what="first bound")
    await plane.client.create(PODS, pod("second", cpu="500m"), "default")
    await expect_unschedulable(plane, "second", "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
    await plane.client.delete(PODS, "first", "default", grace_period_seconds=0)
    await expect_scheduled(plane, "second", "only")


async def test_node_relabel_satisfies_node_selector(plane: Plane) -> None:
    await start(plane, node("n1", 1), node("n2", 2))
    await plane.client.create(PODS, pod("picky", nodeSelector={"disk": "ssd"}), "default")
    await expect_unschedulable(plane, "picky", "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    await plane.client.patch(NODES, "n2", {"metadata": {"labels": {"disk": "ssd"}}})
    await expect_scheduled(plane, "picky", "n2")


async def test_pod_affinity_waits_for_its_partner_pod(plane: Plane) -> None:
    await start(plane, node("n1", 1), node("n2", 2))
    follow = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    await plane.client.create(PODS, pod("web", labels={"app": "web"}, affinity=follow), "default")
    await expect_unschedulable(plane, "web", "0/2 nodes are available: 2 node(s) didn't match pod affinity rules. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    await plane.client.create(PODS, pod("cache", labels={"app": "cache"}), "default")
    cache_node = await plane.until(lambda: bound_to(plane, "cache"), what="cache bound")
    await expect_scheduled(plane, "web", cache_node)


async def test_pod_changed_by_its_owner_is_retried(plane: Plane) -> None:
    taint = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    tainted = node("db", 1)
    tainted["spec"]["taints"] = taint
    await start(plane, tainted)
    await plane.client.create(PODS, pod("pg"), "default")
    await expect_unschedulable(plane, "pg", "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
    # Tolerations may be added to a pending pod; that edit alone must trigger a new attempt.
    await plane.client.patch(PODS, "pg", {"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}, "default")
    await expect_scheduled(plane, "pg", "db")
