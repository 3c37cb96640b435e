"""Preemption: upstream's DefaultPreemption post-filter, run for a pod that fits nowhere.

Pure decisions over the scheduler's :class:`NodeInfo` totals (the scheduler performs the API
writes). Following upstream's ``framework/preemption`` evaluator:

1. *eligibility* — a pod with ``preemptionPolicy: Never`` does not preempt; nor does a pod
   whose nominated node still has a lower-priority pod terminating (its earlier preemption is
   still under way: preempting again would evict more than needed);
2. *nodes where preemption might help* — those that failed only for reasons removing pods can
   cure (resources, pod count, host ports, spread skew, inter-pod anti-affinity); a node
   failing on taints, unschedulable, node affinity, required pod affinity (evicting cannot
   add a matching pod) or missing topology labels is "not helpful";
3. *victims per node* — remove every pod of lower priority, re-run the filters (no fit: the
   node's reasons are the filter's); then give pods back, most important first (higher
   priority, then earlier start), PodDisruptionBudget-violating ones before the others, keeping
   each one that still lets the preemptor fit. What is left are the victims;
4. *pick a node* — fewest PDB violations, then the lowest highest-victim priority, the smallest
   priority sum, the fewest victims, the latest start among the most important victims, and
   finally the first found.

The search stops once ``max(100, 10%)`` of the nodes are candidates (upstream's defaults).
Victims are removed from a node's totals only while it is being examined and put back before
returning — callers see no change. Inter-pod affinity and spread rules are evaluated as
built for the preemptor (with every placed pod), so a victim whose removal would only cure an
anti-affinity or skew violation is not found: such nodes report those reasons.

The resulting ``FailedScheduling`` suffix is upstream's post-filter message: ``preemption:``
followed by a summary over the nodes (``0/3 nodes are available: 3 No preemption victims
found for incoming pod.``) or the eligibility reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from k3py.api.selectors import SelectorError, label_selector_from_dict
from k3py.server.scheduler.nodeinfo import NodeInfo, Requests
from k3py.server.scheduler.podaffinity import REASON_AFFINITY as REASON_POD_AFFINITY
from k3py.server.scheduler.predicates import (
    REASON_AFFINITY,
    REASON_UNSCHEDULABLE,
    PodFacts,
    failure_summary,
    filter_node,
)
from k3py.server.scheduler.topologyspread import REASON_MISSING

Obj = dict[str, Any]

NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."
NOT_ELIGIBLE_TERMINATING = "not eligible due to a terminating pod on the nominated node."
MIN_CANDIDATES_PERCENT = 10
MIN_CANDIDATES_ABSOLUTE = 100
# Upstream shifts each priority by MaxInt32+1 before summing, so that more victims never
# make a smaller sum (priorities can be negative).
PRIORITY_SHIFT = 2**31


def pod_priority(pod: Obj) -> int:
    priority = (pod.get("spec") or {}).get("priority")
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


def _unresolvable(reason: str) -> bool:
    """Reasons no eviction on the node can cure (upstream's UnschedulableAndUnresolvable)."""
    return reason in (REASON_UNSCHEDULABLE, REASON_AFFINITY, REASON_POD_AFFINITY, REASON_MISSING) or reason.startswith(
        "node(s) had untolerated taint")


@dataclass(slots=True)
class PlacedPod:
    """A pod on a node as the scheduler accounts it."""

    key: str
    pod: Obj
    requests: Requests
    ports: frozenset[tuple[str, str, int]]
    priority: int = 0
    start: str = ""

    @classmethod
    def of(cls, key: str, pod: Obj, requests: Requests, ports: frozenset[tuple[str, str, int]]) -> PlacedPod:
        status = pod.get("status") or {}
        start = status.get("startTime") or (pod.get("metadata") or {}).get("creationTimestamp") or ""
        return cls(key, pod, requests, ports, pod_priority(pod), str(start))


@dataclass(slots=True)
class Candidate:
    """A node where evicting ``victims`` (most important first) lets the preemptor fit."""

    node: str
    victims: list[PlacedPod] = field(default_factory=list)
    pdb_violations: int = 0


@dataclass(slots=True)
class Outcome:
    """What preemption decided: a candidate (then no message) or the post-filter message."""

    candidate: Candidate | None
    message: str


def eligibility_problem(pod: Obj, terminating_lower_on_nominated: bool) -> str | None:
    """Why ``pod`` may not preempt now, in upstream's words, or None."""
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return NOT_ELIGIBLE_NEVER
    if terminating_lower_on_nominated:
        return NOT_ELIGIBLE_TERMINATING
    return None


def _importance(victim: PlacedPod) -> tuple[int, str]:
    """Sort key: more important first (higher priority, then the earlier start)."""
    return (-victim.priority, victim.start)


class DisruptionBudgets:
    """How many disruptions each PodDisruptionBudget still allows, to count violations."""

    def __init__(self, pdbs: Iterable[Obj]) -> None:
        self._budgets: list[tuple[str, Any, int, frozenset[str]]] = []
        for pdb in pdbs:
            meta = pdb.get("metadata") or {}
            selector = (pdb.get("spec") or {}).get("selector")
            if not selector:
                continue  # a nil or empty selector matches no pod (upstream)
            try:
                parsed = label_selector_from_dict(selector)
            except SelectorError:
                continue
            if parsed.empty:
                continue
            status = pdb.get("status") or {}
            allowed = status.get("disruptionsAllowed")
            disrupted = frozenset((status.get("disruptedPods") or {}).keys())
            self._budgets.append((meta.get("namespace") or "", parsed, allowed if isinstance(allowed, int) else 0,
                                  disrupted))

    def split(self, victims: list[PlacedPod]) -> tuple[list[PlacedPod], list[PlacedPod]]:
        """(violating, non-violating), each in the given order: evicting a pod of the first
        group takes some budget below zero once the pods before it are evicted too."""
        if not self._budgets:
            return [], list(victims)
        allowed = [budget[2] for budget in self._budgets]
        violating: list[PlacedPod] = []
        others: list[PlacedPod] = []
        for victim in victims:
            meta = victim.pod.get("metadata") or {}
            namespace, labels, name = meta.get("namespace") or "", meta.get("labels") or {}, meta.get("name") or ""
            breaks = False
            for i, (pdb_namespace, selector, _allowed, disrupted) in enumerate(self._budgets):
                if pdb_namespace != namespace or not selector.matches(labels) or name in disrupted:
                    continue
                allowed[i] -= 1
                if allowed[i] < 0:
                    breaks = True
            (violating if breaks else others).append(victim)
        return violating, others


def select_victims(facts: PodFacts, priority: int, info: NodeInfo, placed: list[PlacedPod],
                   budgets: DisruptionBudgets) -> Candidate | list[str]:
    """The fewest, least important victims on ``info`` (a :class:`Candidate`), else the reasons.

    ``placed`` may hold every pod of the node or only those below ``priority``.
    """
    lower = [p for p in placed if p.priority < priority]
    if not lower:
        return [NO_VICTIMS]
    # id -> pod currently taken off the node's totals; all put back before returning.
    removed: dict[int, PlacedPod] = {}
    for victim in lower:
        info.remove_pod(victim.requests, victim.ports)
        removed[id(victim)] = victim
    try:
        failed = filter_node(facts, info)
        if failed is not None:
            return failed
        lower.sort(key=_importance)
        violating, others = budgets.split(lower)
        candidate = Candidate(info.name)
        for group, violates in ((violating, True), (others, False)):
            for victim in group:
                info.add_pod(victim.requests, victim.ports)
                del removed[id(victim)]
                if filter_node(facts, info) is None:
                    continue  # reprieved: the preemptor fits with this pod kept
                info.remove_pod(victim.requests, victim.ports)
                removed[id(victim)] = victim
                candidate.victims.append(victim)
                candidate.pdb_violations += violates
        candidate.victims.sort(key=_importance)
        return candidate
    finally:
        for victim in removed.values():
            info.add_pod(victim.requests, victim.ports)


def _candidate_rank(candidate: Candidate) -> tuple[int, int, int, int]:
    victims = candidate.victims
    if not victims:
        return (candidate.pdb_violations, -PRIORITY_SHIFT, 0, 0)
    return (candidate.pdb_violations, victims[0].priority,
            sum(v.priority + PRIORITY_SHIFT for v in victims), len(victims))


def _latest_start_key(candidate: Candidate) -> str:
    """The earliest start among the node's most important victims (later is better)."""
    if not candidate.victims:
        return "\uffff"
    top = candidate.victims[0].priority
    return min(v.start for v in candidate.victims if v.priority == top)


def pick_candidate(candidates: list[Candidate]) -> Candidate:
    """Upstream's pickOneNodeForPreemption order (see the module docstring)."""
    best_rank = min(_candidate_rank(c) for c in candidates)
    tied = [c for c in candidates if _candidate_rank(c) == best_rank]
    latest = max(_latest_start_key(c) for c in tied)
    return next(c for c in tied if _latest_start_key(c) == latest)


def preempt(pod: Obj, facts: PodFacts, nodes: list[NodeInfo], lower_pods_on: Callable[[str, int], list[PlacedPod]],
            budgets: DisruptionBudgets) -> Outcome:
    """Find where evicting lower-priority pods lets ``pod`` fit (eligibility checked by the caller).

    ``lower_pods_on(node, priority)``: the pods on ``node`` below ``priority``.
    """
    priority = pod_priority(pod)
    reasons: dict[str, int] = {}
    candidates: list[Candidate] = []
    wanted = max(MIN_CANDIDATES_ABSOLUTE, len(nodes) * MIN_CANDIDATES_PERCENT // 100)
    for info in nodes:
        failed = filter_node(facts, info)
        if failed is None:
            continue  # fits already (the scheduler sampled other nodes): nothing to evict here
        if any(_unresolvable(reason) for reason in failed):
            reasons[NOT_HELPFUL] = reasons.get(NOT_HELPFUL, 0) + 1
            continue
        result = select_victims(facts, priority, info, lower_pods_on(info.name, priority), budgets)
        if isinstance(result, Candidate):
            candidates.append(result)
            if len(candidates) >= wanted:
                break
            continue
        for reason in result:
            reasons[reason] = reasons.get(reason, 0) + 1
    if candidates:
        return Outcome(pick_candidate(candidates), "")
    return Outcome(None, f"preemption: {failure_summary(len(nodes), reasons)}")
