"""Scheduler preemption (upstream's DefaultPreemption) over the in-memory API.

The scheduler runs for real (informers, queue, binding, events, deletes); the tests play the
kubelet only where one is needed — finishing a victim's graceful deletion. Pods carry the
``spec.priority`` / ``preemptionPolicy`` that Priority admission would have set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from k3py.client.interface import EVENTS, NODES, PODS
from k3py.server.scheduler.nodeinfo import NodeInfo, pod_requests
from k3py.server.scheduler.predicates import PodFacts
from k3py.server.scheduler.preemption import (
    NO_VICTIMS,
    Candidate,
    DisruptionBudgets,
    PlacedPod,
    pick_candidate,
    select_victims,
)
from k3py.server.scheduler.scheduler import PDBS, Scheduler
from k3py.server.simnodes.kubelet import NodeShape, node_object
from tests.cluster import TestCluster
from tests.controllers.conftest import Plane


def pod(name: str, priority: int, cpu: str = "1", node: str = "", labels: dict[str, str] | None = None,
        policy: str = "PreemptLowerPriority", start: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler", "priority": priority, "preemptionPolicy": policy,
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}],
    }
    if node:
        spec["nodeName"] = node
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "default", "labels": labels or {}}, "spec": spec}
    if start:
        obj["status"] = {"startTime": start}
    return obj


async def start_scheduler(plane: Plane, nodes: int = 1, cpu: str = "2") -> Scheduler:
    for i in range(1, nodes + 1):
        await plane.client.create(NODES, node_object(f"n{i}", i, NodeShape(cpu=cpu, memory="8Gi")))
    (sched,) = await plane.start(Scheduler)
    assert isinstance(sched, Scheduler)
    return sched


def get(plane: Plane, name: str) -> dict[str, Any] | None:
    return plane.transport.peek(PODS, "default", name)


async def finish_terminating(plane: Plane) -> None:
    """Play kubelet: a pod marked for deletion is stopped and removed."""
    for p in plane.pods():
        if p["metadata"].get("deletionTimestamp"):
            await plane.client.delete(PODS, p["metadata"]["name"], "default", grace_period_seconds=0)


def failed_scheduling(plane: Plane, name: str) -> list[str]:
    return [e["message"] for e in plane.transport.all(EVENTS, "default")
            if e["involvedObject"]["name"] == name and e["reason"] == "FailedScheduling"]


async def test_high_priority_pod_preempts_lowest_victim_then_binds(plane: Plane) -> None:
    await start_scheduler(plane)
    await plane.client.create(PODS, pod("low", 10, node="n1"), "default")
    await plane.client.create(PODS, pod("mid", 20, node="n1"), "default")
    high = await plane.client.create(PODS, pod("high", 100), "default")

    nominated = await plane.until(lambda: (get(plane, "high") or {}).get("status", {}).get("nominatedNodeName"),
                                  what="nominatedNodeName on the preemptor")
    assert nominated == "n1"
    low = get(plane, "low")
    assert low is not None and low["metadata"].get("deletionTimestamp"), "the lowest-priority pod is the victim"
    (target,) = [c for c in low["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert (target["status"], target["reason"]) == ("True", "PreemptionByScheduler")
    assert not (get(plane, "mid") or {})["metadata"].get("deletionTimestamp")
    events = [e for e in plane.transport.all(EVENTS, "default") if e["reason"] == "Preempted"]
    assert [(e["involvedObject"]["name"], e["message"]) for e in events] == [
        ("low", f"Preempted by pod {high['metadata']['uid']} on node n1")]

    await finish_terminating(plane)
    await plane.until(lambda: (get(plane, "high") or {})["spec"].get("nodeName") == "n1", what="preemptor bound")
    assert get(plane, "low") is None and get(plane, "mid") is not None


async def test_no_second_preemption_while_victim_terminates(plane: Plane) -> None:
    await start_scheduler(plane)
    await plane.client.create(PODS, pod("old-a", 1, node="n1"), "default")
    await plane.client.create(PODS, pod("old-b", 1, node="n1"), "default")
    await plane.client.create(PODS, pod("high", 100), "default")
    await plane.until(lambda: (get(plane, "high") or {}).get("status", {}).get("nominatedNodeName"), what="nomination")
    terminating = [p["metadata"]["name"] for p in plane.pods() if p["metadata"].get("deletionTimestamp")]
    assert len(terminating) == 1, "one 1-cpu victim frees room for a 1-cpu preemptor"
    # A node change retries every unschedulable pod; the preemptor must wait for its victim.
    await plane.client.patch(NODES, "n1", {"metadata": {"labels": {"retry": "now"}}})
    expected = ("0/1 nodes are available: 1 Insufficient cpu. "
                "preemption: not eligible due to a terminating pod on the nominated node.")
    await plane.until(lambda: expected in failed_scheduling(plane, "high"), what="the waiting preemptor's message")
    assert [p["metadata"]["name"] for p in plane.pods() if p["metadata"].get("deletionTimestamp")] == terminating
    assert (get(plane, "high") or {})["status"]["nominatedNodeName"] == "n1"
    await finish_terminating(plane)
    await plane.until(lambda: (get(plane, "high") or {})["spec"].get("nodeName") == "n1", what="preemptor bound")


async def test_preemptor_gets_the_room_before_a_lower_priority_pod_waiting_with_it(plane: Plane) -> None:
    await start_scheduler(plane)
    await plane.client.create(PODS, pod("victim", 1, cpu="2", node="n1"), "default")
    await plane.client.create(PODS, pod("high", 100, cpu="2"), "default")
    await plane.until(lambda: (get(plane, "high") or {}).get("status", {}).get("nominatedNodeName"), what="nomination")
    # Like a ReplicaSet's replacement for the victim: same low priority, pending meanwhile.
    for i in range(5):
        await plane.client.create(PODS, pod(f"replacement-{i}", 1, cpu="2"), "default")
    await plane.until(lambda: all(failed_scheduling(plane, f"replacement-{i}") for i in range(5)), what="replacements pending")
    await finish_terminating(plane)
    await plane.until(lambda: (get(plane, "high") or {})["spec"].get("nodeName") == "n1", what="preemptor bound")
    assert all(not (get(plane, f"replacement-{i}") or {})["spec"].get("nodeName") for i in range(5))


async def test_preemption_policy_never_does_not_preempt(plane: Plane) -> None:
    await start_scheduler(plane)
    await plane.client.create(PODS, pod("low", 10, cpu="2", node="n1"), "default")
    await plane.client.create(PODS, pod("polite", 100, policy="Never"), "default")
    messages = await plane.until(lambda: failed_scheduling(plane, "polite"), what="FailedScheduling")
    assert messages[0] == ("0/1 nodes are available: 1 Insufficient cpu. "
                           "preemption: not eligible due to preemptionPolicy=Never.")
    assert not (get(plane, "low") or {})["metadata"].get("deletionTimestamp")
    assert not (get(plane, "polite") or {}).get("status", {}).get("nominatedNodeName")


async def test_equal_priority_is_never_preempted(plane: Plane) -> None:
    await start_scheduler(plane, nodes=3, cpu="1")
    for i in range(1, 4):
        await plane.client.create(PODS, pod(f"peer-{i}", 50, node=f"n{i}"), "default")
    await plane.client.create(PODS, pod("same", 50), "default")
    messages = await plane.until(lambda: failed_scheduling(plane, "same"), what="FailedScheduling")
    assert messages[0] == ("0/3 nodes are available: 3 Insufficient cpu. "
                           "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    assert all(not p["metadata"].get("deletionTimestamp") for p in plane.pods())


async def test_pdb_protected_victim_avoided_when_another_node_will_do(plane: Plane) -> None:
    await start_scheduler(plane, nodes=2, cpu="1")
    await plane.client.create(PODS, pod("guarded", 10, node="n1", labels={"app": "db"}), "default")
    await plane.client.create(PODS, pod("free", 10, node="n2", labels={"app": "web"}), "default")
    await plane.client.create(PDBS, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1},
    }, "default")  # fmt: skip
    await plane.until(lambda: len(plane.transport.all(PDBS, "default")) == 1)
    await plane.client.create(PODS, pod("urgent", 100), "default")
    nominated = await plane.until(lambda: (get(plane, "urgent") or {}).get("status", {}).get("nominatedNodeName"),
                                  what="nominatedNodeName")
    assert nominated == "n2"
    assert (get(plane, "free") or {})["metadata"].get("deletionTimestamp")
    assert not (get(plane, "guarded") or {})["metadata"].get("deletionTimestamp")


# -- the pure decisions ---------------------------------------------------------------------


def _placed(name: str, priority: int, cpu: str, start: str = "2026-01-01T00:00:00Z",
            labels: dict[str, str] | None = None) -> PlacedPod:
    p = pod(name, priority, cpu=cpu, node="n1", labels=labels, start=start)
    return PlacedPod.of(f"default/{name}", p, pod_requests(p), frozenset())


def _node(*pods: PlacedPod, cpu: str = "4") -> NodeInfo:
    info = NodeInfo("n1")
    info.set_node(node_object("n1", 1, NodeShape(cpu=cpu, memory="8Gi")))
    for p in pods:
        info.add_pod(p.requests, p.ports)
    return info


def test_reprieve_keeps_the_most_important_pods_and_restores_totals() -> None:
    pods = [_placed("a", 1, "1"), _placed("b", 5, "1"), _placed("c", 3, "1"), _placed("d", 9, "1")]
    info = _node(*pods)
    before = (info.req_cpu, info.pod_count)
    preemptor = pod("p", 10, cpu="2")
    result = select_victims(PodFacts(preemptor, pod_requests(preemptor), frozenset()), 10, info, pods,
                            DisruptionBudgets([]))
    assert isinstance(result, Candidate)
    # d (9) and b (5) are given back first; a and c must go to free 2 cpu.
    assert [v.pod["metadata"]["name"] for v in result.victims] == ["c", "a"]
    assert (info.req_cpu, info.pod_count) == before


def test_no_lower_priority_pods_means_no_victims() -> None:
    pods = [_placed("a", 10, "4")]
    preemptor = pod("p", 10, cpu="1")
    assert select_victims(PodFacts(preemptor, pod_requests(preemptor), frozenset()), 10, _node(*pods), pods,
                          DisruptionBudgets([])) == [NO_VICTIMS]


def test_candidate_order_follows_upstream() -> None:
    def cand(node: str, *victims: PlacedPod, violations: int = 0) -> Candidate:
        return Candidate(node, list(victims), violations)

    assert pick_candidate([cand("x", _placed("a", 1, "1"), violations=1), cand("y", _placed("b", 5, "1"))]).node == "y"
    assert pick_candidate([cand("x", _placed("a", 5, "1")), cand("y", _placed("b", 3, "1"), _placed("c", 3, "1"))]).node == "y"
    assert pick_candidate([cand("x", _placed("a", 3, "1"), _placed("b", 2, "1")), cand("y", _placed("c", 3, "1"))]).node == "y"
    older, newer = _placed("a", 3, "1", "2026-01-01T00:00:00Z"), _placed("b", 3, "1", "2026-06-01T00:00:00Z")
    assert pick_candidate([cand("x", older), cand("y", newer)]).node == "y"


# -- through real kubectl on a simulated node -------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("preempt"), server_args=["--simulated-nodes", "1"]) as running:
        running.wait_for(lambda: running.kubectl("get", "nodes").stdout.count(" Ready ") == 1, what="a Ready node")
        yield running


def _run(cluster: TestCluster, name: str, priority_class: str, cpu: str, **meta: Any) -> None:
    overrides = {"metadata": meta, "spec": {"priorityClassName": priority_class, "containers": [
        {"name": name, "image": "nginx", "resources": {"requests": {"cpu": cpu}}}]}}
    cluster.kubectl("run", name, "--image=nginx", "-n", "preempt", "--overrides", json.dumps(overrides))


def test_kubectl_high_priority_pod_preempts_on_full_node(sim: TestCluster) -> None:
    sim.kubectl("create", "namespace", "preempt")
    sim.kubectl("create", "priorityclass", "batch", "--value=10")
    sim.kubectl("create", "priorityclass", "urgent", "--value=1000")
    # The finalizer keeps the victim readable after its containers stop, for describe.
    _run(sim, "victim", "batch", "3", finalizers=["example.com/hold"])
    sim.wait_for(lambda: "Running" in sim.kubectl("get", "pod", "victim", "-n", "preempt").stdout, what="victim Running")
    _run(sim, "preemptor", "urgent", "2")

    described = sim.wait_for(lambda: "Preempted" in (o := sim.kubectl("describe", "pod", "victim", "-n", "preempt").stdout)
                             and o, what="Preempted event on the victim")
    uid = sim.kubectl_json("get", "pod", "preemptor", "-n", "preempt")["metadata"]["uid"]
    assert f"Preempted by pod {uid} on node simnode-1" in described
    wide = sim.kubectl("get", "pod", "preemptor", "-n", "preempt", "-o", "wide", "--no-headers").stdout.split()
    # NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
    assert wide[2] == "Pending" and wide[7] == "simnode-1", wide

    sim.kubectl("patch", "pod", "victim", "-n", "preempt", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')

    def preemptor_running() -> list[str] | None:
        rows = [r.split() for r in sim.kubectl("get", "pods", "-n", "preempt", "-o", "wide", "--no-headers").stdout.splitlines()]
        return rows if [(r[0], r[2], r[6]) for r in rows] == [("preemptor", "Running", "simnode-1")] else None

    sim.wait_for(preemptor_running, timeout=60, what="victim gone, preemptor Running on simnode-1")
