"""Per-node aggregate state the scheduler filters and scores against, kept incrementally.

A :class:`NodeInfo` holds what a node offers (allocatable cpu in millicores, memory in bytes,
pod slots; labels; taints; whether it is Ready and schedulable) and what is already placed on
it (the sum of requests of its non-terminal pods and their host ports). Pods are added and
removed one at a time as the pod informer reports them — and as the scheduler *assumes* a
placement before its binding is confirmed — so scheduling one pod never walks all pods.

:func:`pod_requests` computes a pod's effective requests as upstream does: the sum over its
containers, or the largest init container if that is larger, plus ``spec.overhead``.
Quantities are parsed once per distinct string (cached).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from k3py.api.quantity import parse_quantity

Obj = dict[str, Any]


@functools.lru_cache(maxsize=4096)
def milli(text: str) -> int:
    """A quantity in thousandths, rounded up (cpu "100m" -> 100, "1" -> 1000)."""
    try:
        return math.ceil(parse_quantity(text) * 1000)
    except (ValueError, ArithmeticError):
        return 0


@functools.lru_cache(maxsize=4096)
def whole(text: str) -> int:
    """A quantity as an integer, rounded up (memory "1Gi" -> 1073741824)."""
    try:
        return math.ceil(parse_quantity(text))
    except (ValueError, ArithmeticError):
        return 0


@dataclass(frozen=True)
class Requests:
    cpu: int = 0  # millicores
    memory: int = 0  # bytes
    ephemeral: int = 0
    extended: tuple[tuple[str, int], ...] = ()


def _container_requests(container: Obj) -> dict[str, str]:
    resources = container.get("resources") or {}
    # Defaulting copies limits into missing requests; do the same for objects that skipped it.
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    return merged


def pod_requests(pod: Obj) -> Requests:
    spec = pod.get("spec") or {}
    totals: dict[str, int] = {}

    def add(into: dict[str, int], reqs: dict[str, str]) -> None:
        for name, value in reqs.items():
            into[name] = into.get(name, 0) + (milli(str(value)) if name == "cpu" else whole(str(value)))

    for c in spec.get("containers") or ():
        add(totals, _container_requests(c))
    for c in spec.get("initContainers") or ():
        init: dict[str, int] = {}
        add(init, _container_requests(c))
        for name, value in init.items():
            if c.get("restartPolicy") == "Always":  # sidecars run alongside the app containers
                totals[name] = totals.get(name, 0) + value
            elif value > totals.get(name, 0):
                totals[name] = value
    add(totals, {k: str(v) for k, v in (spec.get("overhead") or {}).items()})
    extended = tuple(sorted((k, v) for k, v in totals.items()
                            if k not in ("cpu", "memory", "ephemeral-storage", "pods")))
    return Requests(totals.get("cpu", 0), totals.get("memory", 0), totals.get("ephemeral-storage", 0), extended)


def pod_host_ports(pod: Obj) -> frozenset[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) triples the pod claims."""
    ports = set()
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("hostPort"):
                ports.add((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(p["hostPort"])))
    return frozenset(ports)


@dataclass
class Taint:
    key: str
    value: str
    effect: str


@dataclass(slots=True)
class NodeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)
    ready: bool = False
    unschedulable: bool = False
    alloc_cpu: int = 0
    alloc_memory: int = 0
    alloc_pods: int = 110
    alloc_ephemeral: int = 0
    alloc_extended: dict[str, int] = field(default_factory=dict)
    req_cpu: int = 0
    req_memory: int = 0
    req_ephemeral: int = 0
    req_extended: dict[str, int] = field(default_factory=dict)
    # Non-zero requests for scoring: pods without requests still count (100m, 200Mi) so
    # spreading works for request-less workloads, as upstream's NonZeroRequested.
    score_cpu: int = 0
    score_memory: int = 0
    pod_count: int = 0
    ports: dict[tuple[str, str, int], int] = field(default_factory=dict)
    node: Obj = field(default_factory=dict)
    # Ready, schedulable and without NoSchedule/NoExecute taints: only resources can stop a
    # pod without selectors, affinity or tolerations here (the scheduler's fast path).
    plain_ok: bool = False
    # Carries PreferNoSchedule taints: the TaintToleration score can tell nodes apart.
    prefer_no_schedule: bool = False

    def set_node(self, node: Obj) -> None:
        self.node = node
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.labels = dict(meta.get("labels") or {})
        self.taints = [Taint(t.get("key", ""), t.get("value", "") or "", t.get("effect", ""))
                       for t in spec.get("taints") or ()]
        self.unschedulable = bool(spec.get("unschedulable"))
        self.ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in status.get("conditions") or ())
        alloc = status.get("allocatable") or status.get("capacity") or {}
        self.alloc_cpu = milli(str(alloc.get("cpu", "0")))
        self.alloc_memory = whole(str(alloc.get("memory", "0")))
        self.alloc_pods = whole(str(alloc.get("pods", "110")))
        self.alloc_ephemeral = whole(str(alloc.get("ephemeral-storage", "0")))
        self.alloc_extended = {k: whole(str(v)) for k, v in alloc.items()
                               if k not in ("cpu", "memory", "pods", "ephemeral-storage")}
        self.prefer_no_schedule = any(t.effect == "PreferNoSchedule" for t in self.taints)
        self.plain_ok = (self.ready and not self.unschedulable
                         and not any(t.effect in ("NoSchedule", "NoExecute") for t in self.taints))

    def add_pod(self, req: Requests, ports: frozenset[tuple[str, str, int]], sign: int = 1) -> None:
        self.req_cpu += sign * req.cpu
        self.req_memory += sign * req.memory
        self.req_ephemeral += sign * req.ephemeral
        self.score_cpu += sign * (req.cpu or NON_ZERO_CPU)
        self.score_memory += sign * (req.memory or NON_ZERO_MEMORY)
        for name, value in req.extended:
            self.req_extended[name] = self.req_extended.get(name, 0) + sign * value
        self.pod_count += sign
        for port in ports:
            count = self.ports.get(port, 0) + sign
            if count > 0:
                self.ports[port] = count
            else:
                self.ports.pop(port, None)

    def remove_pod(self, req: Requests, ports: frozenset[tuple[str, str, int]]) -> None:
        self.add_pod(req, ports, -1)


NON_ZERO_CPU = 100
NON_ZERO_MEMORY = 200 * 1024 * 1024
