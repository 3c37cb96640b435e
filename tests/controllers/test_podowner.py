"""Unit tests of k3py.server.controllers.podowner: claiming, pods from templates, deletion order.

The orderings are checked against upstream's rules one at a time (each case differs from the
next in one input); claiming runs against the in-memory API (tests/controllers/conftest.py)
and states the exact patches it sends.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from k3py.api.selectors import label_selector_from_dict
from k3py.client.informer import ORPHAN_INDEX, OWNER_UID_INDEX, index_by_owner_uid, index_orphans
from k3py.client.interface import PODS, REPLICASETS
from k3py.server.controllers.podowner import (
    DELETION_COST,
    FactsCache,
    OwnedFacts,
    PodFacts,
    claim,
    claim_candidates,
    deletion_cost,
    max_restarts,
    owner_recheck,
    pod_from_template,
    pod_name_prefix,
    pods_to_delete,
    sort_active_pods,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)
WEB = label_selector_from_dict({"matchLabels": {"app": "web"}})


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, node: str = "n", phase: str = "Running", ready_since: str | None = ago(3600),
        created: str | None = ago(7200), cost: str | None = None, uid: str = "", restarts: tuple[int, ...] = ()) -> dict[str, Any]:
    """A pod as a cache holds it; ``ready_since=None`` makes it not ready, "" ready without a time."""
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"}
    if created:
        meta["creationTimestamp"] = created
    if cost is not None:
        meta["annotations"] = {DELETION_COST: cost}
    status: dict[str, Any] = {"phase": phase}
    if ready_since is not None:
        cond: dict[str, Any] = {"type": "Ready", "status": "True"}
        if ready_since:
            cond["lastTransitionTime"] = ready_since
        status["conditions"] = [cond]
    if restarts:
        status["containerStatuses"] = [{"name": f"c{i}", "restartCount": n} for i, n in enumerate(restarts)]
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


# -- pods from a template -----------------------------------------------------------------------


def replicaset(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "team", "uid": "rs-uid", "labels": {"owner-only": "yes"},
                     "annotations": {"owner-note": "not copied"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"note": "kept"},
                                           "finalizers": ["example.com/hold"]},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }


def test_pod_from_template_takes_the_templates_metadata_and_spec_and_a_controller_reference() -> None:
    rs = replicaset()
    pod_obj = pod_from_template(rs, "apps/v1", "ReplicaSet")
    assert pod_obj == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-", "namespace": "team",
            "labels": {"app": "web"}, "annotations": {"note": "kept"}, "finalizers": ["example.com/hold"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    # The pod's own maps are copies: changing them leaves the owner's template alone.
    pod_obj["metadata"]["labels"]["extra"] = "x"
    pod_obj["metadata"]["annotations"]["extra"] = "x"
    pod_obj["metadata"]["finalizers"].append("x")
    pod_obj["spec"]["hostname"] = "h"
    assert rs == replicaset()


def test_pod_from_template_without_annotations_or_finalizers_sets_neither() -> None:
    rs = replicaset()
    rs["spec"]["template"]["metadata"] = {"labels": {"app": "web"}}
    assert set(pod_from_template(rs, "apps/v1", "ReplicaSet")["metadata"]) == {
        "generateName", "namespace", "labels", "ownerReferences"}


def test_generate_name_prefix_keeps_the_dash_unless_the_prefix_would_be_invalid() -> None:
    assert pod_name_prefix("web") == "web-"
    assert pod_name_prefix("a.b") == "a.b-"
    # The API server validates a prefix with its trailing dash masked: a 253-character name still
    # makes a valid prefix (the server cuts it when generating), a 254-character one does not.
    assert pod_name_prefix("a" * 253) == "a" * 253 + "-"
    assert pod_name_prefix("a" * 254) == "a" * 254
    assert pod_name_prefix("Web") == "Web"


# -- which pods go first --------------------------------------------------------------------


def test_deletion_cost_reads_a_base_10_int32_and_counts_anything_else_as_zero() -> None:
    def cost(value: Any) -> int:
        return deletion_cost({"metadata": {"annotations": {DELETION_COST: value}}})

    assert cost("5") == 5 and cost("-5") == -5 and cost("+7") == 7 and cost("007") == 7
    assert cost("2147483647") == 2 ** 31 - 1 and cost("-2147483648") == -(2 ** 31)
    for bad in ("2147483648", "-2147483649", " 5", "5 ", "5_0", "0x10", "lots", "", "٣", 5):
        assert cost(bad) == 0, bad
    assert deletion_cost({"metadata": {}}) == 0


def test_restarts_are_the_highest_count_of_regular_containers_then_of_sidecars() -> None:
    pod_obj = pod("p", restarts=(1, 1, 1, 1, 1))
    assert max_restarts(pod_obj) == (1, 0)
    pod_obj["spec"]["initContainers"] = [{"name": "sidecar", "restartPolicy": "Always"}, {"name": "setup"}]
    pod_obj["status"]["initContainerStatuses"] = [{"name": "sidecar", "restartCount": 4}, {"name": "setup", "restartCount": 9}]
    assert max_restarts(pod_obj) == (1, 4)


def test_replicaset_order_unscheduled_pending_unready_cost_then_doubled_up() -> None:
    pods = [
        pod("precious", node="n7", cost="1000"),
        pod("alone", node="n6"),
        pod("doubled", node="n5"),
        pod("cheap", node="n4", cost="-5"),
        pod("unready", node="n3", ready_since=None),
        pod("unknown", node="n2", phase="Unknown", ready_since=None),
        pod("pending", node="n1", phase="Pending", ready_since=None),
        pod("unscheduled", node="", phase="Pending", ready_since=None),
    ]
    related = [*pods, pod("sibling-on-n5", node="n5")]
    assert names(pods_to_delete(pods, related, len(pods) - 1, NOW)) == [
        "unscheduled", "pending", "unknown", "unready", "cheap", "doubled", "alone"]


def test_replicaset_order_counts_only_active_related_pods_per_node() -> None:
    a, b = pod("on-a", node="a", ready_since=ago(3600)), pod("on-b", node="b", ready_since=ago(10))
    finished = pod("done-on-a", node="a", phase="Succeeded", ready_since=None)
    deleting = pod("leaving-on-a", node="a")
    deleting["metadata"]["deletionTimestamp"] = ago(1)
    # Only inactive pods share node a: both rank 1, so the one ready more recently goes first.
    assert names(pods_to_delete([a, b], [a, b, finished, deleting], 1, NOW)) == ["on-b"]
    # An active pod of a sibling ReplicaSet on node a outranks readiness.
    assert names(pods_to_delete([a, b], [a, b, pod("sibling-on-a", node="a")], 1, NOW)) == ["on-a"]
    # Nothing related (a ReplicaSet without a controller): no pod is doubled up.
    assert names(pods_to_delete([a, b, pod("also-on-a", node="a", ready_since=ago(3600))], [], 1, NOW)) == ["on-b"]


def test_replicaset_order_compares_ready_times_on_a_log2_scale_with_uid_ties() -> None:
    pods = [
        pod("old", ready_since=ago(1000), uid="uid-0"),
        pod("young", ready_since=ago(10), uid="uid-b"),
        pod("also-young", ready_since=ago(12), uid="uid-a"),  # same power of two of nanoseconds as 10 s
        pod("no-time", ready_since="", uid="uid-z"),
    ]
    assert names(pods_to_delete(pods, [], 3, NOW)) == ["no-time", "also-young", "young"]


def test_replicaset_order_then_restarts_then_creation_on_a_log2_scale() -> None:
    same_ready = ago(3600)
    assert names(pods_to_delete([pod("calm", ready_since=same_ready, restarts=(2, 2, 2)),
                                 pod("crashy", ready_since=same_ready, restarts=(3,))], [], 1, NOW)) == ["crashy"]
    created = [pod("older", ready_since=same_ready, created=ago(1000), uid="uid-0"),
               pod("newer", ready_since=same_ready, created=ago(10), uid="uid-b"),
               pod("also-new", ready_since=same_ready, created=ago(12), uid="uid-a"),
               pod("no-stamp", ready_since=same_ready, created=None, uid="uid-z")]
    assert names(pods_to_delete(created, [], 3, NOW)) == ["no-stamp", "also-new", "newer"]


def test_deleting_all_or_none_needs_no_order() -> None:
    pods = [pod("b", ready_since=ago(10)), pod("a", ready_since=None)]
    assert names(pods_to_delete(pods, [], 2, NOW)) == ["b", "a"]
    assert names(pods_to_delete(pods, [], 5, NOW)) == ["b", "a"]
    assert pods_to_delete(pods, [], 0, NOW) == []


def test_active_pods_order_ignores_cost_and_nodes_and_compares_exact_times() -> None:
    # The Job controller's order (upstream's ActivePods): no deletion cost, no ranks, no log scale.
    pods = [
        pod("cheap-but-long-ready", node="a", cost="-100", ready_since=ago(3600)),
        pod("young", node="a", ready_since=ago(10), uid="uid-b"),
        pod("also-young", node="b", ready_since=ago(12), uid="uid-a"),
        pod("restarting", node="b", ready_since=ago(3600), restarts=(2,)),
        pod("unready", node="c", ready_since=None),
        pod("unscheduled", node="", phase="Pending", ready_since=None),
    ]
    assert names(sort_active_pods(pods)) == [
        "unscheduled", "unready", "young", "also-young", "restarting", "cheap-but-long-ready"]


# -- facts ----------------------------------------------------------------------------------


def test_facts_are_kept_per_object_instance_until_it_is_replaced() -> None:
    class Sized:
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

    facts = FactsCache(PodFacts, Sized(1))  # type: ignore[arg-type]
    first = pod("p")
    assert facts.of(first) is facts.of(first)
    changed = copy.deepcopy(first)
    changed["status"]["conditions"][0]["status"] = "False"
    assert facts.of(changed) is not facts.of(first) and facts.of(first).ready and not facts.of(changed).ready
    remembered = facts.of(first)
    facts.forget(first)
    assert facts.of(first) is not remembered
    # Entries beyond twice the cache's size (plus slack) are dropped wholesale, never served stale.
    many = [pod(f"p{i}") for i in range(300)]
    for p in many:
        assert facts.of(p).obj is p


# -- claiming -----------------------------------------------------------------------------------


def owned_by(uid: str, controller: bool = True, name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": controller,
            "blockOwnerDeletion": True}


async def make_pod(plane, name: str, labels: dict[str, str], refs: list[dict[str, Any]] | None = None,
                   namespace: str = "default", **meta: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels, "ownerReferences": refs or [], **meta},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    return await plane.client.create(PODS, body, namespace)


async def owner(plane) -> tuple[dict[str, Any], dict[str, Any]]:
    rs = await plane.client.create(REPLICASETS, {"metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}, "default")
    return rs, owned_by(rs["metadata"]["uid"])


def refs_patch(obj: dict[str, Any], refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": refs, "uid": obj["metadata"]["uid"],
                         "resourceVersion": obj["metadata"]["resourceVersion"]}}


async def test_claim_keeps_releases_adopts_and_leaves_others_alone(plane) -> None:
    rs, ref = await owner(plane)
    uid = rs["metadata"]["uid"]
    kept = await make_pod(plane, "kept", {"app": "web"}, [ref])
    stray = await make_pod(plane, "stray", {"app": "other"}, [ref, owned_by("someone", controller=False, name="x")])
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    others = await make_pod(plane, "others", {"app": "web"}, [owned_by("another-uid", name="db")])
    unmatched = await make_pod(plane, "unmatched", {"app": "db"})
    leaving = await make_pod(plane, "leaving", {"app": "web"}, finalizers=["example.com/hold"])
    await plane.client.delete(PODS, "leaving", "default")
    leaving = plane.transport.peek(PODS, "default", "leaving")
    assert leaving["metadata"].get("deletionTimestamp")

    candidates = [kept, stray, orphan, others, unmatched, leaving]
    writes = await plane.writes_of(claim(plane.client, PODS, rs, ref, WEB, candidates, PodFacts,
                                         can_adopt=owner_recheck(plane.client, REPLICASETS, rs)))
    assert writes == [
        ("patch", "pods", "stray", refs_patch(stray, [owned_by("someone", controller=False, name="x")])),
        ("patch", "pods", "orphan", refs_patch(orphan, [ref])),
    ]
    assert plane.transport.calls.get("get/replicasets") == 1  # adoption asked the API, not the cache
    assert [r["uid"] for r in plane.transport.peek(PODS, "default", "orphan")["metadata"]["ownerReferences"]] == [uid]
    assert all(r["uid"] != uid for r in plane.transport.peek(PODS, "default", "stray")["metadata"]["ownerReferences"])


async def test_claim_returns_the_kept_and_the_adopted_objects(plane) -> None:
    rs, ref = await owner(plane)
    kept = await make_pod(plane, "kept", {"app": "web"}, [ref])
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    claimed = await claim(plane.client, PODS, rs, ref, WEB, [kept, orphan], PodFacts)
    assert names(claimed) == ["kept", "orphan"]
    assert claimed[1]["metadata"]["ownerReferences"] == [ref]  # the adopted object as the API returned it


async def test_an_owner_being_deleted_neither_adopts_nor_releases(plane) -> None:
    rs, ref = await owner(plane)
    stray = await make_pod(plane, "stray", {"app": "other"}, [ref])
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    kept = await make_pod(plane, "kept", {"app": "web"}, [ref])
    deleting = {**rs, "metadata": {**rs["metadata"], "deletionTimestamp": ago(1)}}
    writes = await plane.writes_of(claim(plane.client, PODS, deleting, ref, WEB, [stray, orphan, kept], PodFacts))
    assert writes == []


async def test_no_adoption_when_a_fresh_read_finds_the_owner_deleting_or_replaced(plane) -> None:
    rs, ref = await owner(plane)
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    # The cache still shows the old owner; the API has a new one of the same name.
    await plane.client.delete(REPLICASETS, "web", "default")
    await owner(plane)
    writes = await plane.writes_of(claim(plane.client, PODS, rs, ref, WEB, [orphan], PodFacts,
                                         can_adopt=owner_recheck(plane.client, REPLICASETS, rs)))
    assert writes == []
    # ... or the owner is gone altogether.
    await plane.client.delete(REPLICASETS, "web", "default")
    assert await owner_recheck(plane.client, REPLICASETS, rs)() is False


async def test_consider_skips_objects_and_member_releases_non_members(plane) -> None:
    rs, ref = await owner(plane)
    finished = await make_pod(plane, "finished-stray", {"app": "other"}, [ref])
    finished["status"] = {"phase": "Succeeded"}
    finished = await plane.client.update_status(PODS, finished)
    finished_orphan = await make_pod(plane, "finished-orphan", {"app": "web"})
    finished_orphan["status"] = {"phase": "Failed"}
    finished_orphan = await plane.client.update_status(PODS, finished_orphan)
    outsider = await make_pod(plane, "outsider", {"app": "web"}, [ref])
    writes = await plane.writes_of(claim(plane.client, PODS, rs, ref, WEB, [finished, finished_orphan, outsider], PodFacts,
                                         consider=lambda f: f.active, member=lambda f: f.obj["metadata"]["name"] != "outsider"))
    assert writes == [("patch", "pods", "outsider", refs_patch(outsider, None))]


async def test_an_object_gone_since_it_was_read_is_not_claimed(plane) -> None:
    rs, ref = await owner(plane)
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    stray = await make_pod(plane, "stray", {"app": "other"}, [ref])
    await plane.client.delete(PODS, "orphan", "default")
    await plane.client.delete(PODS, "stray", "default")
    # Adoption and release answer 404: nothing is claimed and nothing raises.
    assert await claim(plane.client, PODS, rs, ref, WEB, [orphan, stray], PodFacts) == []


async def test_empty_or_missing_selector_claims_nothing_and_releases_everything(plane) -> None:
    rs, ref = await owner(plane)
    kept = await make_pod(plane, "kept", {"app": "web"}, [ref])
    orphan = await make_pod(plane, "orphan", {"app": "web"})
    writes = await plane.writes_of(claim(plane.client, PODS, rs, ref, None, [kept, orphan], PodFacts))
    assert writes == [("patch", "pods", "kept", refs_patch(kept, None))]


async def test_candidates_are_the_owners_objects_and_its_namespaces_orphans(plane) -> None:
    rs, ref = await owner(plane)
    await make_pod(plane, "kept", {"app": "web"}, [ref])
    await make_pod(plane, "orphan", {"app": "web"})
    await make_pod(plane, "elsewhere", {"app": "web"}, namespace="other")
    await make_pod(plane, "others", {"app": "web"}, [owned_by("another-uid")])
    informer = plane.informers.informer(PODS, {OWNER_UID_INDEX: index_by_owner_uid, ORPHAN_INDEX: index_orphans})
    plane.informers.start()
    await plane.informers.wait_synced()
    await plane.until(lambda: len(informer.cache) == 4)
    assert sorted(names(list(claim_candidates(informer.cache, rs)))) == ["kept", "orphan"]
    # An orphan in another namespace is never adopted, whatever its labels.
    writes = await plane.writes_of(claim(plane.client, PODS, rs, ref, WEB, claim_candidates(informer.cache, rs), OwnedFacts))
    assert [w.name for w in writes] == ["orphan"]
