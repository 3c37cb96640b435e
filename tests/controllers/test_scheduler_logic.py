"""Scheduler filters, scoring and failure wording on NodeInfo objects (pure, fast)."""

from __future__ import annotations

from typing import Any

from k3py.client.informer import InformerFactory
from k3py.client.interface import Client
from k3py.client.memory import MemoryTransport
from k3py.server.scheduler.nodeinfo import pod_requests
from k3py.server.scheduler.predicates import failure_summary, nodes_to_find
from k3py.server.scheduler.scheduler import Scheduler
from k3py.server.simnodes.kubelet import NodeShape, node_object


def scheduler(*nodes: dict[str, Any]) -> Scheduler:
    client = Client(MemoryTransport())
    s = Scheduler(client, InformerFactory(client))
    for n in nodes:
        s._node_added(n)
    return s


def node(i: int, cpu: str = "2", memory: str = "4Gi", **changes: Any) -> dict[str, Any]:
    n = node_object(f"n{i}", i, NodeShape(cpu=cpu, memory=memory))
    for path, value in changes.items():
        section, _, field = path.partition("__")
        if section == "labels":
            n["metadata"]["labels"].update(value)
        elif section == "spec":
            n["spec"][field] = value
        elif section == "notready":
            n["status"]["conditions"][-1]["status"] = "False"
    return n


def pod(cpu: str = "", memory: str = "", **spec: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container: dict[str, Any] = {"name": "c", "image": "x", "resources": {"requests": requests}}
    if "ports" in spec:
        container["ports"] = spec.pop("ports")
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [container], **spec}}


def test_requests_sum_containers_and_take_larger_init() -> None:
    p = pod("250m", "64Mi")
    p["spec"]["containers"].append({"name": "d", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    req = pod_requests(p)
    assert req.cpu == 2000  # init container's 2 cpu beats 1.25 for the app containers
    assert req.memory == 64 * 2**20 + 2**30


def test_insufficient_cpu_summary_matches_upstream_wording() -> None:
    s = scheduler(node(1), node(2), node(3))
    best, reasons = s.find_node(pod(cpu="3"))
    assert best is None
    assert failure_summary(3, reasons) == "0/3 nodes are available: 3 Insufficient cpu."


def test_mixed_reasons_are_counted_and_sorted() -> None:
    s = scheduler(node(1, cpu="1", memory="1Gi"), node(2, spec__unschedulable=True),
                  node(3, spec__taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
                  node(4, notready=True))
    best, reasons = s.find_node(pod(cpu="2", memory="2Gi"))
    assert best is None
    assert failure_summary(4, reasons) == (
        "0/4 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, "
        "1 node(s) had untolerated taint {dedicated: gpu}, "
        "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
        "1 node(s) were unschedulable.")


def test_tolerations_node_selector_and_affinity() -> None:
    tainted = node(1, spec__taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
                   labels={"disk": "ssd"})
    plain = node(2)
    s = scheduler(tainted, plain)
    tolerate = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert s.find_node(pod(nodeSelector={"disk": "ssd"}))[0] is None
    assert s.find_node(pod(nodeSelector={"disk": "ssd"}, tolerations=tolerate))[0] == "n1"
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}
    assert s.find_node(pod(affinity=affinity, tolerations=tolerate))[0] == "n2"
    _, reasons = s.find_node(pod(nodeSelector={"disk": "nvme"}))
    assert failure_summary(2, reasons) == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {dedicated: gpu}.")
    assert s.find_node(pod(tolerations=[{"operator": "Exists"}]))[0] in ("n1", "n2")


def test_host_ports_conflict() -> None:
    s = scheduler(node(1))
    ports = [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]
    first = pod(ports=ports)
    name, _ = s.find_node(first)
    assert name == "n1"
    s._place("default/first", "n1", pod_requests(first), frozenset({("0.0.0.0", "TCP", 8080)}))
    _, reasons = s.find_node(pod(ports=ports))
    assert failure_summary(1, reasons) == "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    assert s.find_node(pod(ports=[{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]))[0] == "n1"


def test_least_allocated_prefers_emptier_node_and_counts_placed_pods() -> None:
    s = scheduler(node(1, cpu="4"), node(2, cpu="4"))
    s._place("default/a", "n1", pod_requests(pod(cpu="3")), frozenset())
    assert s.find_node(pod(cpu="500m"))[0] == "n2"
    s._place("default/b", "n2", pod_requests(pod(cpu="3")), frozenset())
    _, reasons = s.find_node(pod(cpu="2"))
    assert reasons == {"Insufficient cpu": 2}
    s._unplace("default/a")
    assert s.nodes["n1"].req_cpu == 0


def test_pod_count_limit() -> None:
    n = node(1)
    n["status"]["allocatable"]["pods"] = "1"
    s = scheduler(n)
    s._place("default/a", "n1", pod_requests(pod()), frozenset())
    _, reasons = s.find_node(pod())
    assert failure_summary(1, reasons) == "0/1 nodes are available: 1 Too many pods."


def test_no_nodes_and_adaptive_sample_size() -> None:
    assert failure_summary(0, {}) == "no nodes available to schedule pods"
    assert nodes_to_find(50) == 50
    assert nodes_to_find(5000) == 500  # 10% of 5,000, upstream's adaptive default
    assert nodes_to_find(1000) == 420


def _anti(app: str, key: str = "kubernetes.io/hostname") -> dict[str, Any]:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}


def _labelled(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    p = pod(**spec)
    p["metadata"] = {"name": name, "namespace": "default", "labels": labels}
    return p


def _schedule(s: Scheduler, p: dict[str, Any]) -> str | None:
    """One scheduling decision, accounted as the scheduler's assume step does."""
    key = f"default/{p['metadata']['name']}"
    s.pod_informer.cache.upsert(p)
    node, _ = s.find_node(p)
    if node is not None:
        s._place(key, node, pod_requests(p), frozenset())
    return node


def test_required_anti_affinity_spreads_one_per_node_then_fails() -> None:
    s = scheduler(node(1), node(2), node(3))
    placed = [_schedule(s, _labelled(f"r{i}", {"app": "redis"}, affinity=_anti("redis"))) for i in range(3)]
    assert sorted(placed) == ["n1", "n2", "n3"]
    fourth = _labelled("r3", {"app": "redis"}, affinity=_anti("redis"))
    assert _schedule(s, fourth) is None
    _, reasons = s.find_node(fourth)
    assert failure_summary(3, reasons) == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    # Symmetry: a pod without rules of its own but matching their term is kept away too.
    assert _schedule(s, _labelled("plain", {"app": "redis"})) is None
    assert _schedule(s, _labelled("other", {"app": "web"})) is not None


def test_required_affinity_follows_the_group_and_first_member_may_start_it() -> None:
    s = scheduler(node(1), node(2), node(3))
    together = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    first = _schedule(s, _labelled("c0", {"app": "cache"}, affinity=together))
    assert first is not None  # matches its own term: allowed to start the group
    for i in range(1, 4):
        assert _schedule(s, _labelled(f"c{i}", {"app": "cache"}, affinity=together)) == first
    follower = _labelled("web", {"app": "web"}, affinity=together)
    assert _schedule(s, follower) == first
    lonely = _labelled("x", {"app": "x"}, affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "nothing"}}, "topologyKey": "kubernetes.io/hostname"}]}})
    _, reasons = s.find_node(lonely)
    assert failure_summary(3, reasons) == "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."


def _zoned(i: int, zone: str) -> dict[str, Any]:
    return node(i, labels={"topology.kubernetes.io/zone": zone})


def test_topology_spread_do_not_schedule_balances_zones() -> None:
    s = scheduler(_zoned(1, "a"), _zoned(2, "a"), _zoned(3, "b"), node(4))  # n4 has no zone label
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    zones = []
    for i in range(4):
        placed = _schedule(s, _labelled(f"w{i}", {"app": "web"}, topologySpreadConstraints=spread))
        assert placed is not None and placed != "n4", "nodes without the key are not eligible"
        zones.append("a" if placed in ("n1", "n2") else "b")
    assert sorted(zones) == ["a", "a", "b", "b"]
    # Zone b's only node is now full: zone a may go one ahead (skew 1), then no further.
    s.nodes["n3"].alloc_pods = s.nodes["n3"].pod_count
    assert _schedule(s, _labelled("w4", {"app": "web"}, topologySpreadConstraints=spread)) in ("n1", "n2")
    blocked = _labelled("w5", {"app": "web"}, topologySpreadConstraints=spread)
    s.pod_informer.cache.upsert(blocked)
    node_name, reasons = s.find_node(blocked)
    assert node_name is None
    assert failure_summary(4, reasons) == (
        "0/4 nodes are available: 1 Too many pods, 1 node(s) didn't match pod topology spread constraints "
        "(missing required label), 2 node(s) didn't match pod topology spread constraints.")


def test_schedule_anyway_constraints_do_not_filter() -> None:
    s = scheduler(_zoned(1, "a"), node(2))
    soft = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}}]
    assert all(_schedule(s, _labelled(f"s{i}", {"app": "web"}, topologySpreadConstraints=soft)) for i in range(4))
