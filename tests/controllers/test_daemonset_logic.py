"""DaemonSet logic: node eligibility and one pod per node, rolling updates (in-memory API)."""

from __future__ import annotations

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
