"""What the ReplicaSet controller remembers between reconciles must follow every change.

Pod facts (labels, readiness, selector matches) are derived once per pod object and parsed
selectors once per owner; these tests change each input after it has been counted and check
that the status and the claimed pods follow, as a client reading the ReplicaSet sees them.
"""

from __future__ import annotations

from typing import Any

from k3py.api.selectors import label_selector_from_dict
from k3py.client.interface import PODS, REPLICASETS
from k3py.server.controllers.podowner import PodFacts
from k3py.server.controllers.replicaset import ReplicaSetController
from tests.controllers.test_replicaset_logic import replicaset


def status_of(plane, name: str = "web") -> dict[str, Any]:
    return plane.transport.peek(REPLICASETS, "default", name).get("status") or {}


async def test_readiness_flips_are_counted_both_ways(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 2 and plane.pods(), what="2 pods")
    await plane.mark_ready(pods[0])
    await plane.until(lambda: status_of(plane).get("readyReplicas") == 1, what="one ready")
    await plane.mark_ready(pods[0], ready=False)
    await plane.until(lambda: status_of(plane).get("readyReplicas") == 0, what="none ready again")
    await plane.mark_ready(pods[1])
    status = await plane.until(lambda: status_of(plane).get("availableReplicas") == 1 and status_of(plane), what="the other ready")
    assert status["readyReplicas"] == 1 and status["replicas"] == 2


async def test_template_label_change_is_reflected_in_fully_labeled_replicas(plane) -> None:
    await plane.start(ReplicaSetController)
    await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    await plane.until(lambda: status_of(plane).get("fullyLabeledReplicas") == 2, what="both fully labelled")
    # A template label the running pods lack: they still match the selector but are no
    # longer fully labelled.
    await plane.client.patch(REPLICASETS, "web", {"spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "front"}}}}},
                             "default")
    status = await plane.until(lambda: status_of(plane).get("observedGeneration") == 2 and status_of(plane), what="generation 2")
    assert status["replicas"] == 2 and status["fullyLabeledReplicas"] == 0
    pod = plane.pods()[0]
    await plane.client.patch(PODS, pod["metadata"]["name"], {"metadata": {"labels": {"app": "web", "tier": "front"}}}, "default")
    await plane.until(lambda: status_of(plane).get("fullyLabeledReplicas") == 1, what="the relabelled pod counted")


async def test_selector_change_releases_pods_it_no_longer_matches(plane) -> None:
    await plane.start(ReplicaSetController)
    rs = await plane.client.create(REPLICASETS, replicaset(replicas=2), "default")
    pods = await plane.until(lambda: len(plane.pods()) == 2 and plane.pods(), what="2 pods")
    # The apps/v1 API server refuses selector changes; the controller still honours one
    # (extensions-era objects, the in-memory API): pods outside the new selector are released.
    labels = {"app": "web", "track": "stable"}
    await plane.client.patch(REPLICASETS, "web", {"spec": {"selector": {"matchLabels": labels},
                                                           "template": {"metadata": {"labels": labels}}}}, "default")

    def released() -> bool:
        return all(not (plane.transport.peek(PODS, "default", p["metadata"]["name"]) or {"metadata": {}})["metadata"].get("ownerReferences")
                   for p in pods)

    await plane.until(released, what="the old pods released")
    owned = await plane.until(lambda: [p for p in plane.pods() if any(r.get("uid") == rs["metadata"]["uid"]
                                                                     for r in p["metadata"].get("ownerReferences") or ())]
                              if len(plane.pods()) == 4 else None, what="two replacement pods")
    assert len(owned) == 2 and all(p["metadata"]["labels"] == labels for p in owned)


def test_pod_facts_answer_for_the_selector_asked() -> None:
    pod = {"metadata": {"labels": {"app": "web"}, "ownerReferences": [{"uid": "u", "controller": True}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    facts = PodFacts(pod)
    web, db, any_app = (label_selector_from_dict({"matchLabels": {"app": "web"}}),
                        label_selector_from_dict({"matchLabels": {"app": "db"}}),
                        label_selector_from_dict({"matchExpressions": [{"key": "app", "operator": "Exists"}]}))
    # Three selectors asked in turn (more than the two remembered) keep their own answers.
    for _ in range(3):
        assert facts.matches(web) and not facts.matches(db) and facts.matches(any_app)
    assert facts.active and facts.ready and facts.controller == {"uid": "u", "controller": True}
