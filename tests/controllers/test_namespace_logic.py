"""Namespace deletion on the in-memory API: content deleted, conditions while something holds
on, then the namespace finalized."""

from __future__ import annotations

from k3py.client.interface import CONFIGMAPS, NAMESPACES, PODS
from k3py.server.controllers.namespace import NamespaceController

HOLD = "test.k3py.io/hold"


def conditions(plane) -> dict[str, dict[str, str]]:
    ns = plane.transport.peek(NAMESPACES, "", "team") or {}
    return {c["type"]: c for c in (ns.get("status") or {}).get("conditions") or []}


async def test_terminating_namespace_reports_what_remains_then_goes(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "team"}})
    await plane.client.create(CONFIGMAPS, {"metadata": {"name": "settings"}}, "team")
    await plane.client.create(PODS, {"metadata": {"name": "stubborn", "finalizers": [HOLD]},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}, "team")
    await plane.start(NamespaceController)
    await plane.client.delete(NAMESPACES, "team")
    conds = await plane.until(lambda: "NamespaceFinalizersRemaining" in (c := conditions(plane)) and c, what="conditions")
    assert plane.transport.peek(CONFIGMAPS, "team", "settings") is None
    assert plane.transport.peek(PODS, "team", "stubborn")["metadata"]["deletionTimestamp"]
    assert plane.transport.peek(NAMESPACES, "", "team")["status"]["phase"] == "Terminating"
    remaining = conds["NamespaceContentRemaining"]
    assert (remaining["status"], remaining["reason"]) == ("True", "SomeResourcesRemain")
    assert remaining["message"] == "Some resources are remaining: pods has 1 resource instances"
    held = conds["NamespaceFinalizersRemaining"]
    assert (held["status"], held["reason"]) == ("True", "SomeFinalizersRemain")
    assert held["message"] == f"Some content in the namespace has finalizers remaining: {HOLD} in 1 resource instances"
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    await plane.client.patch(PODS, "stubborn", {"metadata": {"finalizers": None}}, "team")
    await plane.until(lambda: plane.transport.peek(NAMESPACES, "", "team") is None, timeout=5, what="namespace finalized")
