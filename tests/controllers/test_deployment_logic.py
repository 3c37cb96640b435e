"""Deployment rollout logic against the in-memory API, with a stand-in kubelet marking pods Ready."""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.client.interface import DEPLOYMENTS, PODS, REPLICASETS
from k3py.server.controllers.deployment import (
    HASH_LABEL,
    REVISION,
    REVISION_HISTORY,
    DeploymentController,
    max_surge_unavailable,
    template_hash,
)
from k3py.server.controllers.replicaset import ReplicaSetController


def deployment(name: str = "web", replicas: int = 3, image: str = "nginx:1", **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}},
            **spec,
        },
    }


def rollout_done(d: dict[str, Any] | None) -> bool:
    """kubectl rollout status's completion test (CLIENT-PROTOCOL.md)."""
    if d is None:
        return False
    st = d.get("status") or {}
    want = d["spec"]["replicas"]
    prog = next((c for c in st.get("conditions") or [] if c["type"] == "Progressing"), {})
    return (d["metadata"]["generation"] <= st.get("observedGeneration", 0)
            and prog.get("reason") != "ProgressDeadlineExceeded"
            and st.get("updatedReplicas", 0) >= want
            and st.get("replicas", 0) <= st.get("updatedReplicas", 0)
            and st.get("availableReplicas", 0) >= st.get("updatedReplicas", 0))


def condition(d: dict[str, Any], cond_type: str) -> dict[str, Any]:
    return next(c for c in d["status"]["conditions"] if c["type"] == cond_type)


async def image_rollout(plane, image: str) -> None:
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}, "default")


def test_surge_and_unavailable_resolution() -> None:
    d = deployment(replicas=10)
    assert max_surge_unavailable(d) == (3, 2)  # 25% rounds up for surge, down for unavailable
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}
    assert max_surge_unavailable(d) == (0, 1)  # both zero would deadlock: one may be unavailable
    assert template_hash({"a": 1}) == template_hash({"a": 1}) != template_hash({"a": 1}, 1)


async def test_create_rolls_out_one_revision(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    await plane.client.create(DEPLOYMENTS, deployment(), "default")
    d = await plane.until(lambda: rollout_done(x := plane.transport.peek(DEPLOYMENTS, "default", "web")) and x, what="rollout")
    (rs,) = plane.transport.all(REPLICASETS)
    h = rs["metadata"]["labels"][HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", HASH_LABEL: h}
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert d["metadata"]["annotations"][REVISION] == "1"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    assert all(p["metadata"]["labels"][HASH_LABEL] == h for p in plane.pods())
    assert condition(d, "Available")["status"] == "True"
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert condition(d, "Progressing")["message"] == f'ReplicaSet "web-{h}" has successfully progressed.'
    assert d["status"]["availableReplicas"] == 3 and d["status"].get("unavailableReplicas", 0) == 0


async def test_rolling_update_respects_surge_and_unavailable(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    await plane.client.create(DEPLOYMENTS, deployment(replicas=4, strategy=strategy), "default")
    await plane.until(lambda: rollout_done(plane.transport.peek(DEPLOYMENTS, "default", "web")))
    max_pods = 0
    min_ready = 4

    def sample() -> bool:
        nonlocal max_pods, min_ready
        pods = [p for p in plane.pods() if not p["metadata"].get("deletionTimestamp")]
        max_pods = max(max_pods, len(pods))
        ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))
        min_ready = min(min_ready, ready)
        d = plane.transport.peek(DEPLOYMENTS, "default", "web")
        return rollout_done(d) and d["metadata"]["annotations"][REVISION] == "2" and len(plane.pods()) == 4

    await image_rollout(plane, "nginx:2")
    await plane.until(sample, what="rollout to revision 2")
    assert max_pods <= 5, "maxSurge 1 over 4 replicas"
    assert min_ready >= 4, "maxUnavailable 0"
    rss = {rs["metadata"]["annotations"][REVISION]: rs for rs in plane.transport.all(REPLICASETS)}
    assert rss["1"]["spec"]["replicas"] == 0 and rss["2"]["spec"]["replicas"] == 4
    assert all(p["spec"]["containers"][0]["image"] == "nginx:2" for p in plane.pods())


async def test_undo_reuses_old_replicaset_with_next_revision(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    await plane.client.create(DEPLOYMENTS, deployment(replicas=2), "default")
    await plane.until(lambda: rollout_done(plane.transport.peek(DEPLOYMENTS, "default", "web")))
    first = {rs["metadata"]["name"] for rs in plane.transport.all(REPLICASETS)}
    await image_rollout(plane, "nginx:2")
    await plane.until(lambda: rollout_done(d := plane.transport.peek(DEPLOYMENTS, "default", "web")) and d["metadata"]["annotations"][REVISION] == "2")
    await image_rollout(plane, "nginx:1")  # what `kubectl rollout undo` amounts to
    d = await plane.until(lambda: rollout_done(d := plane.transport.peek(DEPLOYMENTS, "default", "web")) and d["metadata"]["annotations"][REVISION] == "3" and d)
    assert len(plane.transport.all(REPLICASETS)) == 2
    (reused,) = [rs for rs in plane.transport.all(REPLICASETS) if rs["metadata"]["name"] in first]
    assert reused["metadata"]["annotations"][REVISION] == "3"
    assert reused["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert reused["spec"]["replicas"] == 2
    assert d["status"]["updatedReplicas"] == 2


async def test_recreate_removes_old_pods_before_new_ones(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    await plane.client.create(DEPLOYMENTS, deployment(replicas=3, strategy={"type": "Recreate"}), "default")
    await plane.until(lambda: rollout_done(plane.transport.peek(DEPLOYMENTS, "default", "web")))
    mixed = False

    def done() -> bool:
        nonlocal mixed
        images = {p["spec"]["containers"][0]["image"] for p in plane.pods()}
        mixed = mixed or len(images) > 1
        d = plane.transport.peek(DEPLOYMENTS, "default", "web")
        return rollout_done(d) and d["metadata"]["annotations"][REVISION] == "2"

    await image_rollout(plane, "nginx:2")
    await plane.until(done)
    assert not mixed, "Recreate never runs old and new pods together"


async def test_revision_history_limit_prunes_oldest(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    await plane.client.create(DEPLOYMENTS, deployment(replicas=1, revisionHistoryLimit=1), "default")
    await plane.until(lambda: rollout_done(plane.transport.peek(DEPLOYMENTS, "default", "web")))
    for i in range(2, 5):
        await image_rollout(plane, f"nginx:{i}")
        await plane.until(lambda i=i: rollout_done(d := plane.transport.peek(DEPLOYMENTS, "default", "web")) and d["metadata"]["annotations"][REVISION] == str(i))
    await plane.until(lambda: sorted(rs["metadata"]["annotations"][REVISION] for rs in plane.transport.all(REPLICASETS)) == ["3", "4"])


async def test_paused_deployment_scales_but_does_not_roll(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    await plane.client.create(DEPLOYMENTS, deployment(replicas=2), "default")
    await plane.until(lambda: rollout_done(plane.transport.peek(DEPLOYMENTS, "default", "web")))
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"paused": True}}, "default")
    await plane.until(lambda: condition(plane.transport.peek(DEPLOYMENTS, "default", "web"), "Progressing")["reason"] == "DeploymentPaused")
    await image_rollout(plane, "nginx:2")
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": 3}}, "default")
    await plane.until(lambda: len(plane.pods()) == 3)
    await asyncio.sleep(0.05)  # give a wrong controller the chance to start a rollout
    assert len(plane.transport.all(REPLICASETS)) == 1
    await plane.client.patch(DEPLOYMENTS, "web", {"spec": {"paused": False}}, "default")
    await plane.until(lambda: rollout_done(d := plane.transport.peek(DEPLOYMENTS, "default", "web")) and d["metadata"]["annotations"][REVISION] == "2")
    assert {p["spec"]["containers"][0]["image"] for p in plane.pods()} == {"nginx:2"}


async def test_progress_deadline_exceeded_when_pods_never_become_ready(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready(ready=False)
    await plane.client.create(DEPLOYMENTS, deployment(replicas=1, progressDeadlineSeconds=1), "default")
    d = await plane.until(lambda: (d := plane.transport.peek(DEPLOYMENTS, "default", "web")).get("status", {}).get("conditions")
                          and condition(d, "Progressing")["reason"] == "ProgressDeadlineExceeded" and d, timeout=5)
    assert condition(d, "Progressing")["status"] == "False"
    assert condition(d, "Progressing")["message"].endswith("has timed out progressing.")
    assert condition(d, "Available")["status"] == "False"
    assert not [p for p in plane.transport.all(PODS) if p["status"].get("phase") == "Pending"]


async def test_min_ready_seconds_delays_availability(plane) -> None:
    await plane.start(DeploymentController, ReplicaSetController)
    plane.auto_ready()
    loop = asyncio.get_running_loop()
    await plane.client.create(DEPLOYMENTS, deployment(replicas=3, minReadySeconds=2), "default")
    d = await plane.until(lambda: (d := plane.transport.peek(DEPLOYMENTS, "default", "web")).get("status", {}).get("readyReplicas") == 3 and d,
                          what="3 ready")
    ready_at = loop.time()
    # Ready, but not for 2 s yet (Ready stamps have whole seconds: at least 1 s to go).
    assert d["status"].get("availableReplicas", 0) < 3
    (rs,) = plane.transport.all(REPLICASETS)
    assert rs["spec"]["minReadySeconds"] == 2
    d = await plane.until(lambda: rollout_done(x := plane.transport.peek(DEPLOYMENTS, "default", "web")) and x, what="available")
    assert loop.time() - ready_at > 0.9
    assert d["status"]["availableReplicas"] == 3 and condition(d, "Available")["status"] == "True"
