"""Pods bound to a deleted node are force-deleted after the quarantine (in-memory API)."""

from __future__ import annotations

from k3py.client.interface import NODES, PODS
from k3py.server.controllers.podgc import PodGarbageCollector
from k3py.server.simnodes.kubelet import NodeShape, node_object


async def test_pods_of_a_deleted_node_are_removed(plane) -> None:
    await plane.client.create(NODES, node_object("gone", 1, NodeShape()))
    await plane.client.create(NODES, node_object("stays", 2, NodeShape()))
    for name, node in (("a", "gone"), ("b", "gone"), ("c", "stays")):
        await plane.client.create(PODS, {"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}, "default")
    (gc,) = await plane.start(lambda c, i: PodGarbageCollector(c, i, quarantine=0.2))
    await plane.client.delete(NODES, "gone")
    await plane.until(lambda: sorted(p["metadata"]["name"] for p in plane.pods()) == ["c"], what="pods of the gone node deleted")
    assert gc.failures == 0
