"""DaemonSet logic: node eligibility and one pod per node, rolling updates (in-memory API)."""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.client.interface import CONTROLLERREVISIONS, DAEMONSETS, NODES
from k3py.server.controllers.daemonset import DaemonSetController, node_eligible
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import NodeShape, SimulatedNodes, node_object


def daemonset(image: str = "agent:1", **template_spec: Any) -> dict[str, Any]:
    labels = {"app": "agent"}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": image}], **template_spec}}}}


def test_eligibility_respects_selector_and_taints_with_daemon_tolerations() -> None:
    node = node_object("n1", 1, NodeShape())
    node["metadata"]["labels"]["role"] = "edge"
    assert node_eligible({}, node)
    assert node_eligible({"nodeSelector": {"role": "edge"}}, node)
    assert not node_eligible({"nodeSelector": {"role": "core"}}, node)
    node["spec"]["unschedulable"] = True  # cordoned: daemons still run
    assert node_eligible({}, node)
    node["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    assert not node_eligible({}, node)
    assert node_eligible({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}, node)


async def test_one_pod_per_node_and_rolling_update(plane) -> None:
    await plane.start(DaemonSetController, Scheduler, lambda c, i: SimulatedNodes(c, i, 3))
    await plane.client.create(DAEMONSETS, daemonset(), "default")

    def rolled(image: str) -> dict[str, Any] | None:
        ds = plane.transport.peek(DAEMONSETS, "default", "agent")
        pods = [p for p in plane.pods() if not p["metadata"].get("deletionTimestamp")]
        st = ds.get("status") or {}
        ok = (len(pods) == 3 and {p["spec"].get("nodeName") for p in pods} == {"simnode-1", "simnode-2", "simnode-3"}
              and all(p["spec"]["containers"][0]["image"] == image and p["status"].get("phase") == "Running" for p in pods)
              and st.get("desiredNumberScheduled") == 3 and st.get("updatedNumberScheduled") == 3
              and st.get("numberAvailable") == 3 and st.get("observedGeneration") == ds["metadata"]["generation"])
        return ds if ok else None

    await plane.until(lambda: rolled("agent:1"), what="3 daemon pods")
    await plane.client.patch(DAEMONSETS, "agent", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}}, "default")
    await plane.until(lambda: rolled("agent:2"), what="rolled to agent:2")
    revisions = sorted(r["revision"] for r in plane.transport.all(CONTROLLERREVISIONS, "default"))
    assert revisions == [1, 2]


async def test_new_node_gets_a_pod_and_tainted_node_does_not(plane) -> None:
    await plane.start(DaemonSetController, Scheduler, lambda c, i: SimulatedNodes(c, i, 1))
    await plane.client.create(DAEMONSETS, daemonset(), "default")
    await plane.until(lambda: len(plane.pods()) == 1)
    extra = node_object("extra", 7, NodeShape())
    await plane.client.create(NODES, extra)
    tainted = node_object("tainted", 8, NodeShape())
    tainted["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    await plane.client.create(NODES, tainted)
    await plane.until(lambda: sorted(p["spec"].get("nodeName", "") for p in plane.pods()) == ["extra", "simnode-1"],
                      what="pod bound on the new node only")


# -- rolling update budget: nodes made by hand, a stand-in kubelet that binds each daemon pod
# to the node it is pinned to and makes it Ready only when its image is allowed to be.


def start_kubelet(plane, ready_images: set[str]) -> None:
    from k3py.client.interface import PODS
    from k3py.server.controllers.daemonset import _pinned_node

    async def loop() -> None:
        async for event in plane.client.watch(PODS, resource_version="0", bookmarks=False):
            pod = event["object"]
            if event["type"] == "MODIFIED" and pod["metadata"].get("deletionTimestamp"):
                # Nothing runs: finish the graceful deletion at once, as a kubelet would.
                await plane.client.delete(PODS, pod["metadata"]["name"], "default", grace_period_seconds=0,
                                          preconditions={"uid": pod["metadata"]["uid"]})
                continue
            if event["type"] != "ADDED":
                continue
            await plane.client.bind("default", pod["metadata"]["name"], _pinned_node(pod), pod["metadata"]["uid"])
            if pod["spec"]["containers"][0]["image"] in ready_images:
                await plane.mark_ready(pod)

    plane.tasks.append(asyncio.create_task(loop()))


async def add_nodes(plane, count: int) -> None:
    for i in range(count):
        await plane.client.create(NODES, node_object(f"n{i}", i + 1, NodeShape()))


def images_by_node(plane) -> dict[str, str]:
    return {p["spec"]["nodeName"]: p["spec"]["containers"][0]["image"]
            for p in plane.pods() if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")}


async def set_image(plane, image: str) -> None:
    await plane.client.patch(DAEMONSETS, "agent", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}, "default")


async def test_rolling_update_keeps_at_most_max_unavailable_nodes_down(plane) -> None:
    await add_nodes(plane, 5)
    start_kubelet(plane, {"agent:1"})  # agent:2 pods never become Ready
    await plane.start(DaemonSetController)
    ds = daemonset()
    ds["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "40%"}}
    await plane.client.create(DAEMONSETS, ds, "default")
    await plane.until(lambda: (plane.transport.peek(DAEMONSETS, "default", "agent").get("status") or {}).get("numberAvailable") == 5,
                      what="5 available daemon pods")
    await set_image(plane, "agent:2")
    # 40% of 5 nodes is exactly 2: two nodes get agent:2 (never Ready), and the update stops there.
    await plane.until(lambda: sorted(images_by_node(plane).values()) == ["agent:1"] * 3 + ["agent:2"] * 2
                      and len(plane.pods()) == 5, what="2 nodes updated")
    # Status trails the pods by one informer round trip: wait for the settled counts.
    def settled_status() -> tuple[int, ...]:
        s = plane.transport.peek(DAEMONSETS, "default", "agent")["status"]
        return tuple(s.get(k, 0) for k in ("updatedNumberScheduled", "desiredNumberScheduled", "numberAvailable", "numberUnavailable"))
    await plane.until(lambda: settled_status() == (2, 5, 3, 2), what="status 2 updated, 3 available, 2 unavailable")
    controller = plane.controllers[0]
    await plane.reconcile(controller, "default/agent")  # another pass changes nothing while both are down
    assert sorted(images_by_node(plane).values()) == ["agent:1"] * 3 + ["agent:2"] * 2


async def test_unavailable_old_pods_are_replaced_without_budget(plane) -> None:
    await add_nodes(plane, 3)
    start_kubelet(plane, {"agent:2"})  # agent:1 is broken: its pods never become Ready
    await plane.start(DaemonSetController)
    await plane.client.create(DAEMONSETS, daemonset(), "default")  # maxUnavailable 1 (default)
    await plane.until(lambda: len(images_by_node(plane)) == 3, what="3 broken daemon pods")
    await set_image(plane, "agent:2")  # the fix rolls out to every node at once
    await plane.until(lambda: (s := plane.transport.peek(DAEMONSETS, "default", "agent")["status"]).get("numberAvailable") == 3
                      and s.get("updatedNumberScheduled") == 3, what="all nodes fixed")
    assert set(images_by_node(plane).values()) == {"agent:2"}
