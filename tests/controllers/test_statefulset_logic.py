"""StatefulSet ordering on the in-memory API: OrderedReady creates one ordinal at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.client.interface import PODS, STATEFULSETS
from k3py.server.controllers.statefulset import StatefulSetController
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import SimulatedNodes


def statefulset(replicas: int, policy: str = "OrderedReady") -> dict[str, Any]:
    labels = {"app": "db"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": replicas, "serviceName": "db", "podManagementPolicy": policy,
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "pg"}]}}}}


def _ready(pod: dict[str, Any] | None) -> bool:
    return pod is not None and pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


async def test_ordered_ready_creates_each_ordinal_after_the_previous_is_ready(plane) -> None:
    violations: list[str] = []
    seen: list[str] = []

    async def observe() -> None:
        async for event in plane.client.watch(PODS, "default", resource_version="0", bookmarks=False):
            if event["type"] != "ADDED":
                continue
            name = event["object"]["metadata"]["name"]
            seen.append(name)
            ordinal = int(name.rsplit("-", 1)[1])
            if ordinal > 0 and not _ready(plane.transport.peek(PODS, "default", f"db-{ordinal - 1}")):
                violations.append(name)

    watcher = asyncio.create_task(observe())
    try:
        await plane.start(StatefulSetController, Scheduler, lambda c, i: SimulatedNodes(c, i, 2))
        await plane.client.create(STATEFULSETS, statefulset(4), "default")
        await plane.until(lambda: all(_ready(plane.transport.peek(PODS, "default", f"db-{i}")) for i in range(4)),
                          what="4 ready pods")
        sts = await plane.until(lambda: (s := plane.transport.peek(STATEFULSETS, "default", "db"))["status"].get("readyReplicas") == 4 and s)
        assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
        assert seen == ["db-0", "db-1", "db-2", "db-3"]
        assert violations == []
        # Scale down removes the highest ordinals first.
        await plane.client.patch(STATEFULSETS, "db", {"spec": {"replicas": 2}}, "default")
        await plane.until(lambda: sorted(p["metadata"]["name"] for p in plane.pods()) == ["db-0", "db-1"], what="db-0, db-1 left")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_parallel_creates_all_at_once(plane) -> None:
    (controller, *_rest) = await plane.start(StatefulSetController)
    await plane.client.create(STATEFULSETS, statefulset(3, "Parallel"), "default")
    # No scheduler or nodes: the pods never become ready, yet all three exist.
    await plane.until(lambda: sorted(p["metadata"]["name"] for p in plane.pods()) == ["db-0", "db-1", "db-2"])
    assert controller.failures == 0


# -- rolling update with a partition, and claims; a stand-in kubelet makes every pod Ready
# (pods have no node here, so deleting one removes it at once).


def start_kubelet(plane, never_ready: str = "") -> None:
    async def loop() -> None:
        async for event in plane.client.watch(PODS, resource_version="0", bookmarks=False):
            if event["type"] == "ADDED" and event["object"]["spec"]["containers"][0]["image"] != never_ready:
                await plane.mark_ready(event["object"])

    plane.tasks.append(asyncio.create_task(loop()))


def images(plane) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in plane.pods()}


def all_ready(plane, count: int) -> bool:
    pods = plane.pods()
    return len(pods) == count and all(_ready(p) for p in pods)


async def set_image(plane, image: str) -> None:
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}, "default")


async def test_partition_updates_only_ordinals_at_or_above_it(plane) -> None:
    start_kubelet(plane)
    await plane.start(StatefulSetController)
    sts = statefulset(4)
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    await plane.client.create(STATEFULSETS, sts, "default")
    await plane.until(lambda: all_ready(plane, 4), what="4 ready pods")
    await set_image(plane, "pg:2")
    want = {"db-0": "pg", "db-1": "pg", "db-2": "pg:2", "db-3": "pg:2"}
    await plane.until(lambda: images(plane) == want and all_ready(plane, 4), what="db-2 and db-3 updated")
    st = await plane.until(lambda: (s := plane.transport.peek(STATEFULSETS, "default", "db")["status"]).get("updatedReplicas") == 2 and s)
    assert st["currentReplicas"] == 2 and st["currentRevision"] != st["updateRevision"]
    # A pod below the partition that is deleted comes back at the old revision.
    await plane.client.delete(PODS, "db-0", "default")
    await plane.until(lambda: (p := plane.transport.peek(PODS, "default", "db-0")) is not None and _ready(p), what="db-0 back")
    assert images(plane) == want
    # Lowering the partition finishes the rollout, highest ordinal first.
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}, "default")
    await plane.until(lambda: set(images(plane).values()) == {"pg:2"} and all_ready(plane, 4), what="all updated")
    st = await plane.until(lambda: (s := plane.transport.peek(STATEFULSETS, "default", "db")["status"]).get("currentRevision") == s["updateRevision"] and s)
    assert st["updatedReplicas"] == 4 and st["currentReplicas"] == 4


async def test_volume_claim_templates_make_one_claim_per_ordinal_that_outlives_scale_down(plane) -> None:
    from k3py.client.interface import PVCS

    start_kubelet(plane)
    await plane.start(StatefulSetController)
    sts = statefulset(2)
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    sts["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]  # the claim replaces it
    await plane.client.create(STATEFULSETS, sts, "default")
    await plane.until(lambda: all_ready(plane, 2), what="2 ready pods")
    claims = {c["metadata"]["name"]: c for c in plane.transport.all(PVCS, "default")}
    assert sorted(claims) == ["data-db-0", "data-db-1"]
    assert claims["data-db-1"]["metadata"]["labels"] == {"app": "db"}
    assert claims["data-db-1"]["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    pod = plane.transport.peek(PODS, "default", "db-1")
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}}]
    assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db"
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"replicas": 1}}, "default")
    await plane.until(lambda: sorted(images(plane)) == ["db-0"], what="scaled down to db-0")
    assert sorted(c["metadata"]["name"] for c in plane.transport.all(PVCS, "default")) == ["data-db-0", "data-db-1"]


async def test_parallel_rolling_update_still_waits_for_each_updated_pod(plane) -> None:
    start_kubelet(plane, never_ready="pg:broken")
    await plane.start(StatefulSetController)
    await plane.client.create(STATEFULSETS, statefulset(3, "Parallel"), "default")
    await plane.until(lambda: all_ready(plane, 3), what="3 ready pods")
    await set_image(plane, "pg:broken")
    # db-2 is replaced first; its new pod never becomes Ready, so db-1 and db-0 are kept.
    await plane.until(lambda: images(plane) == {"db-0": "pg", "db-1": "pg", "db-2": "pg:broken"}, what="db-2 updated")
    (controller,) = plane.controllers
    await plane.reconcile(controller, "default/db")
    assert images(plane) == {"db-0": "pg", "db-1": "pg", "db-2": "pg:broken"}


def with_claims(replicas: int, **policy: str) -> dict[str, Any]:
    sts = statefulset(replicas)
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    if policy:
        sts["spec"]["persistentVolumeClaimRetentionPolicy"] = policy
    return sts


def claim_names(plane) -> list[str]:
    from k3py.client.interface import PVCS

    return sorted(c["metadata"]["name"] for c in plane.transport.all(PVCS, "default") if not c["metadata"].get("deletionTimestamp"))


async def test_when_scaled_delete_removes_the_claims_of_ordinals_scaled_away(plane) -> None:
    start_kubelet(plane)
    await plane.start(StatefulSetController)
    await plane.client.create(STATEFULSETS, with_claims(3, whenScaled="Delete", whenDeleted="Retain"), "default")
    await plane.until(lambda: all_ready(plane, 3), what="3 ready pods")
    assert claim_names(plane) == ["data-db-0", "data-db-1", "data-db-2"]
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"replicas": 1}}, "default")
    await plane.until(lambda: claim_names(plane) == ["data-db-0"], what="claims of db-1 and db-2 deleted")
    assert sorted(images(plane)) == ["db-0"]


async def test_when_deleted_delete_hands_the_claims_to_the_garbage_collector(plane) -> None:
    from k3py.client.interface import PVCS
    from k3py.server.controllers.garbagecollector import GarbageCollector

    start_kubelet(plane)
    await plane.start(StatefulSetController, GarbageCollector)
    sts = await plane.client.create(STATEFULSETS, with_claims(2, whenDeleted="Delete"), "default")
    await plane.until(lambda: all_ready(plane, 2), what="2 ready pods")

    def owned() -> bool:
        claims = plane.transport.all(PVCS, "default")
        return len(claims) == 2 and all(any(r["uid"] == sts["metadata"]["uid"] for r in c["metadata"].get("ownerReferences") or [])
                                        for c in claims)

    await plane.until(owned, what="claims owned by the StatefulSet")
    # Back to Retain: the references go again.
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain"}}}, "default")
    await plane.until(lambda: not any(c["metadata"].get("ownerReferences") for c in plane.transport.all(PVCS, "default")),
                      what="references removed")
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}}, "default")
    await plane.until(owned, what="claims owned again")
    await plane.client.delete(STATEFULSETS, "db", "default")
    await plane.until(lambda: claim_names(plane) == [], what="claims collected with the StatefulSet")


async def test_default_policy_retains_claims(plane) -> None:
    start_kubelet(plane)
    await plane.start(StatefulSetController)
    await plane.client.create(STATEFULSETS, with_claims(2), "default")
    await plane.until(lambda: all_ready(plane, 2), what="2 ready pods")
    await plane.client.patch(STATEFULSETS, "db", {"spec": {"replicas": 0}}, "default")
    await plane.until(lambda: images(plane) == {}, what="no pods")
    (controller,) = plane.controllers
    await plane.reconcile(controller, "default/db")
    assert claim_names(plane) == ["data-db-0", "data-db-1"]
