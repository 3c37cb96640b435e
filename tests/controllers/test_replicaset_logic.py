"""ReplicaSet reconcile logic against the in-memory API (tests/controllers/conftest.py)."""

from __future__ import annotations

from typing import Any

from k3py.client.interface import PODS, REPLICASETS
from k3py.server.controllers.replicaset import (
    DELETION_COST,
    ReplicaSetController,
    deletion_rank,
    least_valuable,
)


def replicaset(name: str = "web", replicas: int = 3, labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }


async def test_creates_pods_with_controller_owner_reference(plane) -> None:
    await plane.start(ReplicaSetController)
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=3), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 3 and plane.pods(), what="3 pods")
    for pod in pods:
        (ref,) = pod["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": rs["metadata"]["uid"],
                       "controller": True, "blockOwnerDeletion": True}
        assert pod["metadata"]["name"].startswith("web-")
        assert pod["metadata"]["labels"] == {"app": "web"}
        assert pod["spec"]["containers"][0]["image"] == "busybox"
    status = await plane.until(lambda: (plane.transport.peek(REPLICASETS, "default", "web").get("status") or {}).get("replicas") == 3
                               and plane.transport.peek(REPLICASETS, "default", "web")["status"])
    assert status["observedGeneration"] == 1
    assert status["readyReplicas"] == 0 and status["availableReplicas"] == 0
    # No overshoot once the cache catches up.
    assert len(plane.pods()) == 3


async def test_ready_and_available_counts_and_scale_down_prefers_unready(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=3), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 3 and plane.pods())
    await plane.mark_ready(pods[0])
    await plane.mark_ready(pods[1])
    await plane.until(lambda: plane.transport.peek(REPLICASETS, "default", "web")["status"].get("availableReplicas") == 2)
    await plane.client.patch(REPLICASETS, "web", {"spec": {"replicas": 2}}, "default")
    await plane.until(lambda: len(plane.pods()) == 2)
    assert {p["metadata"]["name"] for p in plane.pods()} == {pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]}
    status = await plane.until(lambda: plane.transport.peek(REPLICASETS, "default", "web")["status"].get("observedGeneration") == 2
                               and plane.transport.peek(REPLICASETS, "default", "web")["status"])
    assert status["replicas"] == 2 and status["readyReplicas"] == 2


async def test_deleted_pod_is_replaced(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 2 and plane.pods())
    await plane.client.delete(PODS, pods[0]["metadata"]["name"], "default")
    await plane.until(lambda: len(plane.pods()) == 2 and pods[0]["metadata"]["name"] not in {p["metadata"]["name"] for p in plane.pods()})


async def test_adopts_matching_orphans_and_releases_relabelled_pods(plane) -> None:
    orphan = {"metadata": {"name": "orphan", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    await plane.client.create(PODS, orphan, "default")
    await plane.start(ReplicaSetController)
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    await plane.until(lambda: len(plane.pods()) == 2)
    adopted = plane.transport.peek(PODS, "default", "orphan")
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    # Relabel one pod out of the selector: it is released and replaced.
    await plane.client.patch(PODS, "orphan", {"metadata": {"labels": {"app": "other"}}}, "default")
    await plane.until(lambda: not plane.transport.peek(PODS, "default", "orphan")["metadata"].get("ownerReferences"))
    await plane.until(lambda: len(plane.pods()) == 3)


def test_deletion_rank_orders_least_valuable_first() -> None:
    def pod(name: str, node: str = "", phase: str = "Pending", ready: str = "", created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
        status: dict[str, Any] = {"phase": phase}
        if ready:
            status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ready}]
        return {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"nodeName": node}, "status": status}

    pods = [
        pod("ready-long", "n", "Running", "2024-01-01T00:00:00Z"),
        pod("ready-recent", "n", "Running", "2024-01-02T00:00:00Z"),
        pod("running-unready", "n", "Running"),
        pod("pending-scheduled", "n"),
        pod("unscheduled"),
    ]
    assert [p["metadata"]["name"] for p in sorted(pods, key=deletion_rank)] == [
        "unscheduled", "pending-scheduled", "running-unready", "ready-recent", "ready-long"]


def test_deletion_cost_and_doubled_up_nodes_rank_before_readiness_age() -> None:
    def pod(name: str, node: str, cost: str | None = None, ready: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"}
        if cost is not None:
            meta["annotations"] = {DELETION_COST: cost}
        return {"metadata": meta, "spec": {"nodeName": node},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready}]}}

    # All ready and running: a negative deletion cost goes first, a high one last; among equal
    # costs a pod sharing its node with another goes before one alone — even if ready longer.
    pods = [
        pod("alone-recent", "b", ready="2024-01-03T00:00:00Z"),
        pod("pair-1", "a"), pod("pair-2", "a"),
        pod("cheap", "c", cost="-5"),
        pod("precious", "a", cost="1000"),
        pod("garbage-cost", "d", cost="lots"),  # invalid: counts as 0
    ]
    order = [p["metadata"]["name"] for p in least_valuable(pods, len(pods))]
    assert order[0] == "cheap" and order[-1] == "precious"
    assert order.index("pair-1") < order.index("alone-recent") and order.index("pair-2") < order.index("alone-recent")


async def test_scale_down_removes_the_pod_with_the_lowest_deletion_cost(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=3), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 3 and plane.pods())
    for p in pods:
        await plane.mark_ready(p)
    chosen = pods[1]["metadata"]["name"]
    await plane.client.patch(PODS, chosen, {"metadata": {"annotations": {DELETION_COST: "-10"}}}, "default")
    await plane.until(lambda: plane.transport.peek(REPLICASETS, "default", "web")["status"].get("readyReplicas") == 3)
    await plane.client.patch(REPLICASETS, "web", {"spec": {"replicas": 2}}, "default")
    await plane.until(lambda: len(plane.pods()) == 2, what="scaled down")
    assert chosen not in {p["metadata"]["name"] for p in plane.pods()}
