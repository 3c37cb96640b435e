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
