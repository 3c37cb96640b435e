"""ReplicaSet reconcile logic against the in-memory API (tests/controllers/conftest.py)."""

from __future__ import annotations

from typing import Any

from k3py.client.interface import PODS, REPLICASETS
from k3py.server.controllers.podowner import DELETION_COST
from k3py.server.controllers.replicaset import ReplicaSetController


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


def rs_status(plane, name: str = "web") -> dict[str, Any]:
    """The ReplicaSet's status as stored ({} until the controller first writes it)."""
    return plane.transport.peek(REPLICASETS, "default", name).get("status") or {}


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
                               and rs_status(plane))
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
    await plane.until(lambda: rs_status(plane).get("availableReplicas") == 2)
    await plane.client.patch(REPLICASETS, "web", {"spec": {"replicas": 2}}, "default")
    await plane.until(lambda: len(plane.pods()) == 2)
    assert {p["metadata"]["name"] for p in plane.pods()} == {pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]}
    status = await plane.until(lambda: rs_status(plane).get("observedGeneration") == 2
                               and rs_status(plane))
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


async def test_scale_down_removes_the_pod_with_the_lowest_deletion_cost(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=3), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 3 and plane.pods())
    for p in pods:
        await plane.mark_ready(p)
    chosen = pods[1]["metadata"]["name"]
    await plane.client.patch(PODS, chosen, {"metadata": {"annotations": {DELETION_COST: "-10"}}}, "default")
    await plane.until(lambda: rs_status(plane).get("readyReplicas") == 3)
    await plane.client.patch(REPLICASETS, "web", {"spec": {"replicas": 2}}, "default")
    await plane.until(lambda: len(plane.pods()) == 2, what="scaled down")
    assert chosen not in {p["metadata"]["name"] for p in plane.pods()}
