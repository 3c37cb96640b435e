"""Claiming as the other owners do it (k3py.server.controllers.podowner's claim), one reconcile
each: the Deployment adopts and releases ReplicaSets, the StatefulSet keeps only its members.
"""

from __future__ import annotations

from typing import Any

from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS
from k3py.server.controllers.deployment import DeploymentController
from k3py.server.controllers.statefulset import StatefulSetController
from tests.controllers.test_deployment_logic import deployment
from tests.controllers.test_statefulset_logic import statefulset


def refs_patch(obj: dict[str, Any], refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": refs, "uid": obj["metadata"]["uid"],
                         "resourceVersion": obj["metadata"]["resourceVersion"]}}


def controller_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def replicaset(name: str, labels: dict[str, str], owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "labels": labels, "ownerReferences": [controller_ref(owner)] if owner else []},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "old"}]}}}}


async def test_deployment_adopts_matching_replicasets_and_releases_strays_first(plane) -> None:
    d = await plane.client.create(DEPLOYMENTS, deployment(replicas=0), "default")
    orphan = await plane.client.create(REPLICASETS, replicaset("web-orphan", {"app": "web", "pod-template-hash": "a"}), "default")
    stray = await plane.client.create(REPLICASETS, replicaset("web-stray", {"app": "other"}, d), "default")
    elsewhere = replicaset("web-elsewhere", {"app": "web"})
    await plane.client.create(REPLICASETS, elsewhere, "other")
    controller = await plane.prepare(DeploymentController)
    await plane.caught_up(controller)

    writes = await plane.writes_of(controller.reconcile("default/web"))

    # The claim comes first; the rest of the reconcile (a new ReplicaSet, status) follows.
    assert writes[:2] == [
        ("patch", "replicasets", "web-stray", refs_patch(stray, None)),
        ("patch", "replicasets", "web-orphan", refs_patch(orphan, [controller_ref(d)])),
    ]
    assert not [w for w in writes if w.name == "web-elsewhere"]  # another namespace's orphan
    assert plane.transport.calls.get("get/deployments") == 1  # adoption re-read the Deployment


async def test_statefulset_releases_pods_that_are_not_its_ordinals(plane) -> None:
    sts = await plane.client.create(STATEFULSETS, statefulset(1), "default")
    labels = sts["spec"]["selector"]["matchLabels"]
    body = {"metadata": {"labels": labels, "ownerReferences": [controller_ref(sts)]},
            "spec": {"containers": [{"name": "c", "image": "pg"}]}}
    member = await plane.client.create(PODS, {**body, "metadata": {**body["metadata"], "name": "db-0"}}, "default")
    outsider = await plane.client.create(PODS, {**body, "metadata": {**body["metadata"], "name": "db-extra"}}, "default")
    intruder = await plane.client.create(PODS, {"metadata": {"name": "db-1", "labels": labels},
                                                "spec": {"containers": [{"name": "c", "image": "pg"}]}}, "default")
    controller = await plane.prepare(StatefulSetController)
    await plane.caught_up(controller)

    writes = await plane.writes_of(controller.reconcile("default/db"))

    # db-extra is released; the orphan db-1 (a member's name) is adopted; db-0 is kept as it is.
    assert [w for w in writes if w.path == "pods"] == [
        ("patch", "pods", "db-extra", refs_patch(outsider, None)),
        ("patch", "pods", "db-1", refs_patch(intruder, [controller_ref(sts)])),
    ]
    assert member["metadata"]["name"] == "db-0"


async def test_statefulset_pods_come_from_the_template_with_their_identity(plane) -> None:
    spec = statefulset(1)
    spec["spec"]["template"]["metadata"]["annotations"] = {"note": "kept"}
    spec["spec"]["template"]["metadata"]["finalizers"] = ["example.com/hold"]
    sts = await plane.client.create(STATEFULSETS, spec, "default")
    controller = await plane.prepare(StatefulSetController)
    await plane.caught_up(controller)

    writes = await plane.writes_of(controller.reconcile("default/db"))

    (create,) = [w for w in writes if w.path == "pods"]
    revision = create.body["metadata"]["labels"]["controller-revision-hash"]
    assert create == ("create", "pods", "", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "generateName": "db-", "namespace": "default",
                     "labels": {"app": "db", "controller-revision-hash": revision,
                                "statefulset.kubernetes.io/pod-name": "db-0", "apps.kubernetes.io/pod-index": "0"},
                     "annotations": {"note": "kept"}, "finalizers": ["example.com/hold"],
                     "ownerReferences": [controller_ref(sts)]},
        "spec": {"containers": [{"name": "c", "image": "pg"}], "hostname": "db-0", "subdomain": "db"},
    })
