"""Garbage collection of dependents on the in-memory API: foreground deletion waits only for
dependents whose ownerReference sets ``blockOwnerDeletion``; a dependent with another, live
owner is not deleted but loses the reference to the owner being deleted (upstream's
attemptToDeleteItem: solid owners win, waiting owners' references are dropped)."""

from __future__ import annotations

from typing import Any

from k3py.client.interface import CONFIGMAPS, PODS
from k3py.server.controllers.garbagecollector import GarbageCollector

HOLD = "test.k3py.io/hold"  # a finalizer the test removes by hand: keeps a dependent "being deleted"


def owner_ref(owner: dict[str, Any], block: bool | None) -> dict[str, Any]:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
    if block is not None:
        ref["blockOwnerDeletion"] = block
    return ref


def pod(name: str, refs: list[dict[str, Any]], finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "ownerReferences": refs}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "x"}]}}


async def release(plane, name: str) -> None:
    await plane.client.patch(PODS, name, {"metadata": {"finalizers": None}}, "default")


async def test_foreground_deletion_waits_for_blocking_dependents_only(plane) -> None:
    owner = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "owner"}}, "default")
    await plane.client.create(PODS, pod("blocking", [owner_ref(owner, True)], [HOLD]), "default")
    await plane.client.create(PODS, pod("non-blocking", [owner_ref(owner, False)], [HOLD]), "default")
    await plane.start(GarbageCollector)
    await plane.client.delete(CONFIGMAPS, "owner", "default", propagation_policy="Foreground")
    # Both dependents are deleted (their own finalizers hold them in Terminating)...
    await plane.until(lambda: all((p := plane.transport.peek(PODS, "default", n)) and p["metadata"].get("deletionTimestamp")
                                  for n in ("blocking", "non-blocking")), what="dependents deleted")
    # ...and the non-blocking one going away changes nothing for the owner, which waits.
    await release(plane, "non-blocking")
    await plane.until(lambda: plane.transport.peek(PODS, "default", "non-blocking") is None)
    held = plane.transport.peek(CONFIGMAPS, "default", "owner")
    assert held is not None and held["metadata"]["finalizers"] == ["foregroundDeletion"]
    await release(plane, "blocking")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "default", "owner") is None, what="owner deleted")


async def test_foreground_owner_is_not_held_by_non_blocking_dependents(plane) -> None:
    owner = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "owner"}}, "default")
    await plane.client.create(PODS, pod("plain", [owner_ref(owner, None)], [HOLD]), "default")
    await plane.start(GarbageCollector)
    await plane.client.delete(CONFIGMAPS, "owner", "default", propagation_policy="Foreground")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "default", "owner") is None, what="owner deleted")
    # The dependent was still deleted (collected once its owner was gone).
    await plane.until(lambda: plane.transport.peek(PODS, "default", "plain")["metadata"].get("deletionTimestamp"))
    await release(plane, "plain")


async def test_dependent_with_a_live_second_owner_survives_a_foreground_delete(plane) -> None:
    doomed = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "doomed"}}, "default")
    keeper = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "keeper"}}, "default")
    await plane.client.create(PODS, pod("shared", [owner_ref(doomed, True), owner_ref(keeper, True)]), "default")
    await plane.start(GarbageCollector)
    await plane.client.delete(CONFIGMAPS, "doomed", "default", propagation_policy="Foreground")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "default", "doomed") is None, what="doomed owner deleted")
    shared = plane.transport.peek(PODS, "default", "shared")
    assert shared is not None and not shared["metadata"].get("deletionTimestamp")
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["keeper"]


async def test_background_and_orphan(plane) -> None:
    owner = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "owner"}}, "default")
    other = await plane.client.create(CONFIGMAPS, {"metadata": {"name": "other"}}, "default")
    await plane.client.create(PODS, pod("child", [owner_ref(owner, True)]), "default")
    await plane.client.create(PODS, pod("kept", [owner_ref(other, True)]), "default")
    await plane.start(GarbageCollector)
    await plane.client.delete(CONFIGMAPS, "owner", "default", propagation_policy="Background")
    await plane.until(lambda: plane.transport.peek(PODS, "default", "child") is None, what="child collected")
    await plane.client.delete(CONFIGMAPS, "other", "default", propagation_policy="Orphan")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "default", "other") is None, what="orphaning owner deleted")
    kept = plane.transport.peek(PODS, "default", "kept")
    assert kept is not None and not kept["metadata"].get("ownerReferences")
