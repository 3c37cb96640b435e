"""Proportional scaling of a Deployment resized during a rollout (upstream's sync.go scale()).

The rollouts here stall deterministically: a stand-in kubelet makes pods Ready only for the
images (and up to the counts) a test allows, so the ReplicaSets settle at sizes computed by
hand below, and the scale that follows is checked against upstream's arithmetic:

    allowed   = spec.replicas + maxSurge        (maxSurge resolved against the new size)
    to_add    = allowed - sum(rs.spec.replicas)
    share(rs) = round(rs.replicas * allowed / rs.max-replicas) - rs.replicas,
                capped by what is left of to_add; largest set first; leftover to the largest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS
from k3py.server.controllers.deployment import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    DeploymentController,
    is_scaling_event,
    proportional_sizes,
)
from k3py.server.controllers.replicaset import ReplicaSetController
from tests.controllers.test_deployment_logic import condition, deployment, image_rollout


def image_of(obj: dict[str, Any]) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def start_kubelet(plane, ready_limits: dict[str, int | None]) -> None:
    """Mark pods Running+Ready while their image's limit allows (None: no limit); others stay
    Pending for ever, which is what stalls a rollout at a known point."""
    readied: dict[str, int] = {}

    async def loop() -> None:
        async for event in plane.client.watch(PODS, resource_version="0", bookmarks=False):
            pod = event["object"]
            if event["type"] != "ADDED":
                continue
            image = pod["spec"]["containers"][0]["image"]
            limit = ready_limits.get(image, 0)
            if limit is None or readied.get(image, 0) < limit:
                readied[image] = readied.get(image, 0) + 1
                await plane.mark_ready(pod)

    plane.tasks.append(asyncio.create_task(loop()))


def sizes_by_image(plane) -> dict[str, int]:
    return {image_of(rs): rs["spec"]["replicas"] for rs in plane.transport.all(REPLICASETS)}


def settled(plane, want: dict[str, int]) -> Callable[[], bool]:
    """The ReplicaSets have the wanted sizes and their pods exist (the RS controller caught up)."""
    def check() -> bool:
        pods = [p for p in plane.pods() if not p["metadata"].get("deletionTimestamp")]
        return sizes_by_image(plane) == want and len(pods) == sum(want.values())
    return check


async def stalled_rollout(plane) -> None:
    """10 ready nginx:1 pods, then nginx:2 whose pods never become Ready.

    Default strategy (25%/25%) at 10 replicas: maxSurge 3 (rounded up), maxUnavailable 2.
    The new set starts at 3 (13 = 10 + 3), the old one drops to 8 (keeping 10 - 2 available),
    the new one takes the freed surge to 5, and nothing can move after that: 8 + 5 = 13.
    """
    start_kubelet(plane, {"nginx:1": None})
    await plane.client.create(DEPLOYMENTS, deployment(replicas=10), "default")
    await plane.until(lambda: (plane.transport.peek(DEPLOYMENTS, "default", "web").get("status") or {}).get("availableReplicas") == 10,
                      what="10 available")
    await image_rollout(plane, "nginx:2")
    await plane.until(settled(plane, {"nginx:1": 8, "nginx:2": 5}), what="the rollout to stall at 8 + 5")


def assert_annotated(plane, desired: int, max_replicas: int) -> None:
    for rs in plane.transport.all(REPLICASETS):
        if rs["spec"]["replicas"]:
            notes = rs["metadata"]["annotations"]
            assert (notes[DESIRED_REPLICAS], notes[MAX_REPLICAS]) == (str(desired), str(max_replicas)), rs["metadata"]["name"]


async def test_paused_rollout_scaled_10_to_20_shares_replicas_in_proportion(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    await stalled_rollout(plane)
    assert_annotated(plane, 10, 13)
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"paused": True}}, "default")
    await plane.until(lambda: condition(plane.transport.peek(DEPLOYMENTS, "default", "web"), "Progressing")["reason"] == "DeploymentPaused")
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 20}}, "default")
    # maxSurge at 20 is 5: allowed 25, to_add 25 - 13 = 12.
    # old (8, largest first): round(8 * 25 / 13) = round(15.38) = 15 -> +7
    # new (5):                round(5 * 25 / 13) = round(9.62)  = 10 -> +5 (12 - 7 left: fits)
    await plane.until(settled(plane, {"nginx:1": 15, "nginx:2": 10}), what="15 + 10")
    assert_annotated(plane, 20, 25)
    await plane.until(lambda: (st := plane.transport.peek(DEPLOYMENTS, "default", "web")["status"])["replicas"] == 25
                      and st["updatedReplicas"] == 10, what="deployment status 25 replicas, 10 updated")

    # Back down to 5 while still paused: maxSurge 2 (25% of 5, up), allowed 7, to_add -18.
    # old (15): round(15 * 7 / 25) = round(4.2) = 4 -> -11;  new (10): round(2.8) = 3 -> -7.
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 5}}, "default")
    await plane.until(settled(plane, {"nginx:1": 4, "nginx:2": 3}), what="4 + 3")
    assert_annotated(plane, 5, 7)


async def test_scaling_during_an_unpaused_rollout_is_proportional_too(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    await stalled_rollout(plane)
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 20}}, "default")
    # The same arithmetic as when paused; after it the rollout cannot move (25 = 20 + 5 pods,
    # 15 available = 20 - maxUnavailable 5), so the sizes stay.
    await plane.until(settled(plane, {"nginx:1": 15, "nginx:2": 10}), what="15 + 10")
    assert_annotated(plane, 20, 25)
    await plane.until(lambda: (d := plane.transport.peek(DEPLOYMENTS, "default", "web"))["status"].get("observedGeneration") == d["metadata"]["generation"])
    assert sizes_by_image(plane) == {"nginx:1": 15, "nginx:2": 10}


async def test_three_active_sets_leftover_goes_to_the_largest(plane) -> None:
    """maxSurge 1 / maxUnavailable 0 at 10 replicas, three nginx:2 pods may become Ready:
    nginx:2 grows one at a time as each is Ready (nginx:1 shrinks 10 -> 7), its 4th pod never
    is: 7 + 4 = 11. Rolling to nginx:3 then starts the new set at 0 (11 pods = the maximum),
    drops nginx:2's unready pod (7 + 3 keep 10 available) and gives nginx:3 that surge slot:
    7 + 3 + 1, stuck since the nginx:3 pod never becomes Ready."""
    await plane.start(DeploymentController, ReplicaSetController)
    start_kubelet(plane, {"nginx:1": None, "nginx:2": 3})
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    await plane.client.create(DEPLOYMENTS, deployment(replicas=10, strategy=strategy), "default")
    await plane.until(lambda: (plane.transport.peek(DEPLOYMENTS, "default", "web").get("status") or {}).get("availableReplicas") == 10)
    await image_rollout(plane, "nginx:2")
    await plane.until(settled(plane, {"nginx:1": 7, "nginx:2": 4}), what="7 + 4")
    await image_rollout(plane, "nginx:3")
    await plane.until(settled(plane, {"nginx:1": 7, "nginx:2": 3, "nginx:3": 1}), what="7 + 3 + 1")
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"paused": True, "replicas": 15}}, "default")
    # allowed 15 + 1 = 16, to_add 16 - 11 = 5, each set last scaled for max-replicas 11:
    # nginx:1 7 -> round(10.18) = 10 (+3); nginx:2 3 -> round(4.36) = 4 (+1);
    # nginx:3 1 -> round(1.45) = 1 (+0); 4 added, the leftover 1 goes to nginx:1 -> 11.
    await plane.until(settled(plane, {"nginx:1": 11, "nginx:2": 4, "nginx:3": 1}), what="11 + 4 + 1")
    assert_annotated(plane, 15, 16)


def rs(name: str, replicas: int, created: str, desired: int = 10, max_replicas: int = 13) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(max_replicas)}},
            "spec": {"replicas": replicas}}


def test_proportional_sizes_ties_and_caps() -> None:
    d = deployment(replicas=20)  # maxSurge 5: allowed 25
    a = rs("a", 5, "2024-01-01T00:00:00Z")
    b = rs("b", 4, "2024-01-02T00:00:00Z")
    c = rs("c", 4, "2024-01-03T00:00:00Z")
    # to_add 12. a: round(5*25/13) = 10 (+5); the 4s, newer first when growing: c round(7.69) = 8
    # (+4), then b would get +4 too but only 12 - 9 = 3 are left.
    assert [(x["metadata"]["name"], n) for x, n in proportional_sizes(d, [a, b, c])] == [("a", 10), ("c", 8), ("b", 7)]
    # Shrinking to 0 empties every set; ties go older first.
    d0 = deployment(replicas=0)
    assert [(x["metadata"]["name"], n) for x, n in proportional_sizes(d0, [a, b, c])] == [("a", 0), ("b", 0), ("c", 0)]
    # A set without the annotation (scaled by hand) is measured against the deployment's size.
    bare = {"metadata": {"name": "bare", "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"replicas": 4}}
    d["status"] = {"replicas": 8}
    assert proportional_sizes(d, [bare]) == [(bare, 25)]  # round(4 * 25 / 8) = 13 (+9), leftover 12
    assert is_scaling_event(d, [a]) and not is_scaling_event(deployment(replicas=10), [a, bare])
