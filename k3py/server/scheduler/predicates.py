"""Filters and scoring: may this pod run on that node, and how good a fit is it?

Filters return ``None`` when the node fits, else the reasons it does not, in upstream's
wording — the scheduler counts reasons across nodes into the ``FailedScheduling`` summary
(``0/3 nodes are available: 3 Insufficient cpu.``). Filters, in upstream's plugin order:
node unschedulable, taints/tolerations (a NotReady node counts as tainted
``node.kubernetes.io/not-ready:NoSchedule``, as the node lifecycle controller would taint it),
node affinity / nodeSelector, node ports, resources (cpu, memory, ephemeral storage, extended, pod
count) against allocatable minus what is already placed, hard topology spread constraints
(:mod:`k3py.server.scheduler.topologyspread`) and required inter-pod (anti-)affinity
(:mod:`k3py.server.scheduler.podaffinity`).

:func:`least_allocated_score` is upstream's NodeResourcesFit score (the mean over cpu and
memory of the free percentage after placing the pod, 0-100); the scheduler inlines it in its
filter loop, and :mod:`~k3py.server.scheduler.scoring` weighs it against the other plugins.
"""

from __future__ import annotations

from typing import Any

from k3py.server.scheduler.nodeinfo import (
    NON_ZERO_CPU,
    NON_ZERO_MEMORY,
    NodeInfo,
    Requests,
    Taint,
)
from k3py.server.scheduler.podaffinity import PodAffinityRules
from k3py.server.scheduler.topologyspread import SpreadRules

Obj = dict[str, Any]

NOT_READY_TAINT = Taint("node.kubernetes.io/not-ready", "", "NoSchedule")
UNSCHEDULABLE_TAINT = Taint("node.kubernetes.io/unschedulable", "", "NoSchedule")

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"


def tolerates(toleration: Obj, taint: Taint) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.key:
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == taint.value


def _match_expression(expr: Obj, labels: dict[str, str], fields: dict[str, str] | None = None) -> bool:
    source = fields if fields is not None else labels
    key = expr.get("key", "")
    op = expr.get("operator", "")
    values = expr.get("values") or []
    present = key in source
    value = source.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            lhs, rhs = int(value or ""), int(values[0])
        except ValueError:
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False


def matches_node_selector_terms(terms: list[Obj], node: NodeInfo) -> bool:
    """nodeSelectorTerms are ORed; expressions within a term are ANDed."""
    for term in terms:
        if matches_node_selector_term(term, node):
            return True
    return False


def matches_node_selector_term(term: Obj, node: NodeInfo) -> bool:
    """One term: its expressions ANDed; an empty term matches nothing."""
    exprs = term.get("matchExpressions")
    field_exprs = term.get("matchFields")
    if not exprs and not field_exprs:
        return False
    labels = node.labels
    if exprs and not all(_match_expression(e, labels) for e in exprs):
        return False
    if field_exprs:
        fields = {"metadata.name": node.name}
        return all(_match_expression(e, labels, fields) for e in field_exprs)
    return True


class PodFacts:
    """What filtering needs from a pod, extracted once per scheduling attempt."""

    __slots__ = ("node_selector", "plain", "pod_rules", "ports", "requests", "required_terms",
                 "spread_rules", "tolerations")

    def __init__(self, pod: Obj, requests: Requests, ports: frozenset[tuple[str, str, int]],
                 pod_rules: PodAffinityRules | None = None, spread_rules: SpreadRules | None = None) -> None:
        spec = pod.get("spec") or {}
        self.node_selector: dict[str, str] = dict(spec.get("nodeSelector") or {})
        affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        self.required_terms: list[Obj] | None = required.get("nodeSelectorTerms") if required else None
        self.tolerations: list[Obj] = list(spec.get("tolerations") or ())
        self.requests = requests
        self.ports = ports
        # Only cpu, memory and pod count can rule a plain_ok node out for a "plain" pod.
        self.pod_rules = pod_rules
        self.spread_rules = spread_rules
        self.plain = (not self.node_selector and self.required_terms is None and not ports
                      and not requests.extended and not requests.ephemeral and pod_rules is None
                      and spread_rules is None)


def filter_node(facts: PodFacts, node: NodeInfo) -> list[str] | None:
    """None when the pod fits ``node``; otherwise the reasons, upstream-worded."""
    if node.unschedulable and not any(tolerates(t, UNSCHEDULABLE_TAINT) for t in facts.tolerations):
        return [REASON_UNSCHEDULABLE]
    taints = node.taints if node.ready else [*node.taints, NOT_READY_TAINT]
    for taint in taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(tolerates(t, taint) for t in facts.tolerations):
            return [f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"]
    if facts.node_selector and any(node.labels.get(k) != v for k, v in facts.node_selector.items()):
        return [REASON_AFFINITY]
    if facts.required_terms is not None and not matches_node_selector_terms(facts.required_terms, node):
        return [REASON_AFFINITY]
    if facts.ports and node.ports:
        for host_ip, proto, port in facts.ports:
            for other_ip, other_proto, other_port in node.ports:
                if port == other_port and proto == other_proto and (
                        host_ip == other_ip or "0.0.0.0" in (host_ip, other_ip)):
                    return [REASON_PORTS]
    reasons: list[str] = []
    req = facts.requests
    if node.pod_count + 1 > node.alloc_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    if req.cpu and node.req_cpu + req.cpu > node.alloc_cpu:
        reasons.append("Insufficient cpu")
    if req.memory and node.req_memory + req.memory > node.alloc_memory:
        reasons.append("Insufficient memory")
    if req.ephemeral and node.req_ephemeral + req.ephemeral > node.alloc_ephemeral:
        reasons.append("Insufficient ephemeral-storage")
    for name, value in req.extended:
        if node.req_extended.get(name, 0) + value > node.alloc_extended.get(name, 0):
            reasons.append(f"Insufficient {name}")
    if reasons:
        return reasons
    if facts.spread_rules is not None:
        reason = facts.spread_rules.check(node.labels)
        if reason is not None:
            return [reason]
    if facts.pod_rules is not None:
        reason = facts.pod_rules.check(node.labels)
        if reason is not None:
            return [reason]
    return None


def least_allocated_score(req: Requests, node: NodeInfo) -> float:
    cpu_req = node.score_cpu + (req.cpu or NON_ZERO_CPU)
    mem_req = node.score_memory + (req.memory or NON_ZERO_MEMORY)
    cpu = (node.alloc_cpu - cpu_req) * 100 / node.alloc_cpu if node.alloc_cpu > 0 else 0.0
    mem = (node.alloc_memory - mem_req) * 100 / node.alloc_memory if node.alloc_memory > 0 else 0.0
    return (max(cpu, 0.0) + max(mem, 0.0)) / 2


def failure_summary(total_nodes: int, reasons: dict[str, int]) -> str:
    """``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable.``"""
    if total_nodes == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."


def nodes_to_find(total: int, percentage: int = 0) -> int:
    """How many feasible nodes to find before scoring (upstream's adaptive percentage)."""
    if total < 100:
        return total
    pct = percentage or max(5, 50 - total // 125)
    return max(100, total * pct // 100)
