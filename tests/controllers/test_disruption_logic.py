"""PodDisruptionBudget arithmetic (pure) and the status the controller writes (in-memory API)."""

from __future__ import annotations

from typing import Any

import pytest

from k3py.server.controllers.disruption import budget_numbers


@pytest.mark.parametrize(("spec", "expected", "healthy", "result"), [
    ({"minAvailable": 2}, 3, 3, (2, 1)),
    ({"minAvailable": "50%"}, 3, 3, (2, 1)),  # 1.5 rounds up
    ({"maxUnavailable": 1}, 4, 4, (3, 1)),
    ({"maxUnavailable": "25%"}, 5, 4, (3, 1)),  # 1.25 unavailable rounds up to 2
    ({"minAvailable": 3}, 3, 2, (3, 0)),
    ({}, 2, 2, (2, 0)),
])
def test_budget_numbers(spec: dict, expected: int, healthy: int, result: tuple[int, int]) -> None:
    assert budget_numbers({"spec": spec}, expected, healthy) == result


# -- the controller against the in-memory API: a Deployment mid-rollout (3 wanted, a ReplicaSet
# surged to 4), made by hand so nothing but the disruption controller acts.


async def rollout_world(plane) -> None:
    from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS

    def ref(owner: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True}

    labels = {"app": "web"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    d = await plane.client.create(DEPLOYMENTS, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                                                "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": template}}, "default")
    old = await plane.client.create(REPLICASETS, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "metadata": {"name": "web-old", "ownerReferences": [ref(d)]},
                                                  "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template}}, "default")
    new = await plane.client.create(REPLICASETS, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "metadata": {"name": "web-new", "ownerReferences": [ref(d)]},
                                                  "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template}}, "default")
    for i, rs in enumerate((old, old, new, new)):
        pod = await plane.client.create(PODS, {"metadata": {"name": f"web-{i}", "labels": labels, "ownerReferences": [ref(rs)]},
                                               "spec": template["spec"]}, "default")
        await plane.mark_ready(pod)


def pdb(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


def numbers(plane) -> tuple[int, int, int, int] | None:
    from k3py.server.controllers.disruption import PDBS

    st = (plane.transport.peek(PDBS, "default", "web") or {}).get("status") or {}
    if "expectedPods" not in st:
        return None
    return st["expectedPods"], st["currentHealthy"], st["desiredHealthy"], st["disruptionsAllowed"]


@pytest.mark.parametrize(("spec", "want"), [
    # maxUnavailable: measured against the Deployment's 3 replicas, not the 4 surged pods.
    ({"maxUnavailable": 1}, (3, 4, 2, 2)),
    # A percentage minAvailable likewise: 50% of 3 rounds up to 2.
    ({"minAvailable": "50%"}, (3, 4, 2, 2)),
    # An integer minAvailable counts the pods that exist.
    ({"minAvailable": 3}, (4, 4, 3, 1)),
])
async def test_status_measures_percentages_against_controller_scale(plane, spec: dict[str, Any], want: tuple[int, ...]) -> None:
    from k3py.server.controllers.disruption import PDBS, DisruptionController

    await rollout_world(plane)
    await plane.start(DisruptionController)
    await plane.client.create(PDBS, pdb(**spec), "default")
    await plane.until(lambda: numbers(plane) == want, what=f"status {want}")
    cond = next(c for c in plane.transport.peek(PDBS, "default", "web")["status"]["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")


async def test_unready_and_terminating_pods_are_not_healthy(plane) -> None:
    from k3py.client.interface import PODS
    from k3py.server.controllers.disruption import PDBS, DisruptionController

    await rollout_world(plane)
    await plane.start(DisruptionController)
    await plane.client.create(PDBS, pdb(minAvailable=3), "default")
    await plane.until(lambda: numbers(plane) == (4, 4, 3, 1))
    await plane.mark_ready(plane.transport.peek(PODS, "default", "web-0"), ready=False)
    await plane.client.patch(PODS, "web-1", {"metadata": {"finalizers": ["test.k3py.io/hold"]}}, "default")
    await plane.client.delete(PODS, "web-1", "default")
    await plane.until(lambda: numbers(plane) == (4, 2, 3, 0), what="2 healthy, no disruption allowed")
    cond = next(c for c in plane.transport.peek(PDBS, "default", "web")["status"]["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientPods")
    await plane.client.patch(PODS, "web-1", {"metadata": {"finalizers": None}}, "default")


async def test_percentage_budget_over_unscalable_pods_fails_safe(plane) -> None:
    from k3py.client.interface import EVENTS, PODS
    from k3py.server.controllers.disruption import PDBS, DisruptionController

    ds_ref = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid", "controller": True}
    await plane.client.create(PODS, {"metadata": {"name": "agent-1", "labels": {"app": "web"}, "ownerReferences": [ds_ref]},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}, "default")
    await plane.client.create(PODS, {"metadata": {"name": "loose", "labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}, "default")
    await plane.start(DisruptionController)
    await plane.client.create(PDBS, pdb(maxUnavailable="10%"), "default")

    def failed() -> dict[str, Any] | None:
        st = (plane.transport.peek(PDBS, "default", "web") or {}).get("status") or {}
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "DisruptionAllowed"), None)
        return cond if cond and cond["reason"] == "SyncFailed" else None

    cond = await plane.until(failed, what="SyncFailed")
    assert cond["status"] == "False" and cond["message"] == 'found no controllers for pod "agent-1"'
    assert plane.transport.peek(PDBS, "default", "web")["status"]["disruptionsAllowed"] == 0
    # Without the DaemonSet pod, only the unmanaged pod is left: warned about, not counted.
    await plane.client.delete(PODS, "agent-1", "default")
    await plane.until(lambda: numbers(plane) == (0, 0, 0, 0), what="empty expected scale")
    await plane.until(lambda: [e for e in plane.transport.all(EVENTS, "default") if e["reason"] == "UnmanagedPods"])
