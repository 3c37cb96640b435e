"""The exact writes of one ReplicaSet reconcile (the expected actions of sample-controller's
tests): scale-up, scale-down — which pod goes first — and adoption/release.

Each test builds the world in the in-memory API, lets the controller's informers catch up
(its workers never run) and runs ``reconcile`` once, so nothing else writes meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from k3py.client.interface import PODS, REPLICASETS
from k3py.server.controllers.podowner import DELETION_COST
from k3py.server.controllers.replicaset import ReplicaSetController
from tests.controllers.test_replicaset_logic import replicaset


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# Ready times a day apart from a minute ago: far enough apart on upstream's log2 age scale.
READY_LONG_AGO = ago(86400)
READY_RECENTLY = ago(60)


def controller_ref(owner: dict[str, Any], kind: str = "ReplicaSet") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def template_pod(rs: dict[str, Any]) -> dict[str, Any]:
    """The pod the ReplicaSet's template makes (what a create must send)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{rs['metadata']['name']}-", "namespace": "default",
                         "labels": rs["spec"]["template"]["metadata"]["labels"], "ownerReferences": [controller_ref(rs)]},
            "spec": rs["spec"]["template"]["spec"]}


async def add_pod(plane, name: str, labels: dict[str, str], owner: dict[str, Any] | None = None, node: str = "",
                  ready_since: str | None = None, phase: str = "Running", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod as a kubelet would have reported it: on ``node``, ``phase``, Ready since ``ready_since``."""
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels, "annotations": annotations or {},
                                         "ownerReferences": [controller_ref(owner)] if owner else []},
                            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]} if node else
                            {"containers": [{"name": "c", "image": "busybox"}]}}
    created = await plane.client.create(PODS, body, "default")
    status: dict[str, Any] = {"phase": phase}
    if ready_since:
        status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}]
    return await plane.client.update_status(PODS, {**created, "status": status})


def stored(plane, name: str = "web") -> dict[str, Any]:
    rs = plane.transport.peek(REPLICASETS, "default", name)
    assert rs is not None
    return rs


def status_write(rs: dict[str, Any], **status: int) -> tuple[str, str, str, dict[str, Any]]:
    full = {"replicas": 0, "fullyLabeledReplicas": 0, "readyReplicas": 0, "availableReplicas": 0, "observedGeneration": 1}
    full.update(status)
    return ("update", "replicasets/status", rs["metadata"]["name"], {**rs, "status": full})


def delete_write(pod: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    return ("delete", "pods", pod["metadata"]["name"],
            {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": pod["metadata"]["uid"]}})


async def test_scale_up_creates_the_missing_pods_from_the_template_then_writes_status(plane) -> None:
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=3), "default")
    await add_pod(plane, "web-a", {"app": "web"}, rs, node="n1", ready_since=READY_LONG_AGO)
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)
    before = stored(plane)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    # Two creates (slow start: one, then the other), then the status of what the cache held.
    assert writes == [
        ("create", "pods", "", template_pod(rs)),
        ("create", "pods", "", template_pod(rs)),
        status_write(before, replicas=1, fullyLabeledReplicas=1, readyReplicas=1, availableReplicas=1),
    ]
    assert [reason for reason, _ in controller.recorder.events] == ["SuccessfulCreate", "SuccessfulCreate"]
    # Once the informer has seen the new pods, the next reconcile only counts them.
    await plane.caught_up(controller)
    before = stored(plane)
    assert await plane.writes_of(controller.reconcile("default/web")) == [
        status_write(before, replicas=3, fullyLabeledReplicas=3, readyReplicas=1, availableReplicas=1)]


async def test_scale_down_deletes_the_lowest_deletion_cost_first(plane) -> None:
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    pods = [await add_pod(plane, f"web-{i}", {"app": "web"}, rs, node=f"n{i}", ready_since=READY_LONG_AGO,
                          annotations={DELETION_COST: "-10"} if i == 1 else None)
            for i in range(3)]
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)
    before = stored(plane)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    assert writes == [delete_write(pods[1]),
                      status_write(before, replicas=2, fullyLabeledReplicas=2, readyReplicas=2, availableReplicas=2)]
    assert controller.recorder.events == [("SuccessfulDelete", "Deleted pod: web-1")]


async def test_scale_down_of_a_deployments_old_set_prefers_nodes_crowded_by_the_new_set(plane) -> None:
    # Upstream ranks each pod by the active pods of every ReplicaSet under the same controller
    # on its node: old-a shares node a with a pod of the new set, so it goes first even though
    # old-b became ready more recently (which otherwise decides).
    deployment = {"metadata": {"name": "web", "uid": "deployment-uid"}}
    old = replicaset("web-old", replicas=1, labels={"app": "web", "pod-template-hash": "old"})
    new = replicaset("web-new", replicas=1, labels={"app": "web", "pod-template-hash": "new"})
    for rs in (old, new):
        rs["metadata"]["ownerReferences"] = [controller_ref(deployment, "Deployment")]
    old = await plane.client.create(REPLICASETS, old, "default")
    new = await plane.client.create(REPLICASETS, new, "default")
    old_a = await add_pod(plane, "old-a", old["spec"]["selector"]["matchLabels"], old, node="a", ready_since=READY_LONG_AGO)
    await add_pod(plane, "old-b", old["spec"]["selector"]["matchLabels"], old, node="b", ready_since=READY_RECENTLY)
    await add_pod(plane, "new-a", new["spec"]["selector"]["matchLabels"], new, node="a", ready_since=READY_LONG_AGO)
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)
    before = stored(plane, "web-old")

    writes = await plane.writes_of(controller.reconcile("default/web-old"))

    assert writes == [delete_write(old_a), status_write(before, replicas=1, fullyLabeledReplicas=1,
                                                        readyReplicas=1, availableReplicas=1)]


async def test_scale_down_of_a_set_without_controller_ranks_no_pod_as_doubled_up(plane) -> None:
    # With no controller there are no related pods (upstream): two pods sharing node a do not
    # outrank the pod that became ready most recently.
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    await add_pod(plane, "web-a1", {"app": "web"}, rs, node="a", ready_since=READY_LONG_AGO)
    await add_pod(plane, "web-a2", {"app": "web"}, rs, node="a", ready_since=READY_LONG_AGO)
    recent = await add_pod(plane, "web-b", {"app": "web"}, rs, node="b", ready_since=READY_RECENTLY)
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    assert writes[0] == delete_write(recent)


async def test_adopts_matching_orphans_releases_strays_then_creates_the_rest(plane) -> None:
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    stray = await add_pod(plane, "stray", {"app": "other"}, rs, node="n1", ready_since=READY_LONG_AGO)
    orphan = await add_pod(plane, "orphan", {"app": "web"}, node="n2", ready_since=READY_LONG_AGO)
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)
    before = stored(plane)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    def refs_patch(pod: dict[str, Any], refs: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {"metadata": {"ownerReferences": refs, "uid": pod["metadata"]["uid"],
                             "resourceVersion": pod["metadata"]["resourceVersion"]}}

    assert writes == [
        ("patch", "pods", "stray", refs_patch(stray, None)),
        ("patch", "pods", "orphan", refs_patch(orphan, [controller_ref(rs)])),
        ("create", "pods", "", template_pod(rs)),
        status_write(before, replicas=1, fullyLabeledReplicas=1, readyReplicas=1, availableReplicas=1),
    ]
    # The adoption was checked against the API, not only the cache.
    assert plane.transport.calls.get("get/replicasets") == 1


async def test_inactive_pods_are_neither_adopted_nor_released(plane) -> None:
    # Upstream claims among active pods only: a finished orphan stays an orphan, and a finished
    # pod of ours that no longer matches keeps its reference (the garbage collector's business).
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=1), "default")
    await add_pod(plane, "done-orphan", {"app": "web"}, node="n1", phase="Succeeded")
    await add_pod(plane, "done-stray", {"app": "other"}, rs, node="n1", phase="Failed")
    controller = await plane.prepare(ReplicaSetController)
    await plane.caught_up(controller)
    before = stored(plane)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    assert writes == [("create", "pods", "", template_pod(rs)), status_write(before)]
