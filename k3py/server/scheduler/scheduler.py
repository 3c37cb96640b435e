"""The scheduler: bind each pending pod of ``default-scheduler`` to a node.

Informers on nodes and pods keep a :class:`NodeInfo` per node up to date incrementally (pods
are added to / removed from their node's totals as the pod informer reports them). Pods with
no ``spec.nodeName``, ``schedulerName`` default-scheduler and no deletionTimestamp are queued
by key; one scheduling loop takes them one at a time (so decisions never race each other):

1. *filter*: walk nodes from a rotating start index until enough feasible nodes are found
   (all nodes below 100, else upstream's adaptive percentage — 10% of 5,000), counting why
   the others failed;
2. *score* the feasible ones and pick the best (:mod:`~k3py.server.scheduler.scoring`: upstream's
   default plugins and weights). A pod with nothing but least-allocated to tell nodes apart — no
   ownerReference, no preferred (anti-)affinity, no soft spread constraints, no
   PreferNoSchedule taints anywhere — is scored inline in the filter loop; otherwise the
   candidates are collected and handed to a :class:`ScorePlan`. Owner spreading reads
   :class:`OwnerCounts`, kept incrementally in ``_place``/``_unplace``;
3. *assume*: add the pod to that node's totals at once, so the next pod sees it, and bind
   asynchronously (POST pods/binding; the API server sets the PodScheduled condition);
   a failed bind un-assumes and retries the pod.

A pod that fits nowhere gets ``PodScheduled=False`` (reason Unschedulable) with upstream's
summary message, a ``FailedScheduling`` Warning event, and waits in an unschedulable set
that is flushed back into the queue when the cluster changes (a node added or updated, a pod
deleted or finished, the pod itself changed) or after at most 10 s. Pods refused for pod
(anti-)affinity or spread reasons are also retried when a pod is placed or relabelled — after
1 s, upstream's initial backoff, so a stream of placements cannot spin them. Successful binds
record a ``Scheduled`` event.

Before giving up on such a pod, :mod:`~k3py.server.scheduler.preemption` (upstream's
DefaultPreemption post-filter) looks for a node where evicting lower-priority pods makes it
fit. When it finds one, the pod gets ``status.nominatedNodeName``, each victim a
``DisruptionTarget`` condition, a ``Preempted`` event and a graceful delete; the victims' deletes
flush the pod back into the queue (a flush queues higher priorities first, so the preemptor
reaches the freed room before lower-priority pods waiting with it; nominations are not
otherwise reserved). Otherwise the post-filter's message is appended to the
``FailedScheduling`` summary. Pods that fit never reach this path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Hashable, Iterable
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory, object_key
from k3py.client.interface import NODES, PODS, Client, Resource
from k3py.server.scheduler.nodeinfo import (
    NON_ZERO_CPU,
    NON_ZERO_MEMORY,
    NodeInfo,
    Requests,
    pod_host_ports,
    pod_requests,
)
from k3py.server.scheduler.podaffinity import (
    REASON_AFFINITY as REASON_POD_AFFINITY,
)
from k3py.server.scheduler.podaffinity import (
    REASON_ANTI_AFFINITY,
    PlacedPods,
    PodAffinityRules,
    build_rules,
    has_preferred_terms,
    has_required_anti_affinity,
    required_terms,
)
from k3py.server.scheduler.predicates import (
    PodFacts,
    failure_summary,
    filter_node,
    matches_node_selector_terms,
    nodes_to_find,
    tolerates,
)
from k3py.server.scheduler.preemption import (
    NOT_ELIGIBLE_TERMINATING,
    DisruptionBudgets,
    PlacedPod,
    eligibility_problem,
    pod_priority,
    preempt,
)
from k3py.server.scheduler.scoring import ScorePlan, preferred_node_terms
from k3py.server.scheduler.topologyspread import (
    HOSTNAME,
    REASON_MISSING,
    REASON_SKEW,
    ZONE,
    OwnerCounts,
    SpreadRules,
    SpreadScorer,
    build_spread_rules,
    default_spread_scorer,
    explicit_spread_scorer,
    hard_constraints,
    owner_uid,
    soft_constraints,
)

log = logging.getLogger("k3py.scheduler")

SCHEDULER_NAME = "default-scheduler"
UNSCHEDULABLE_FLUSH = 10.0
POD_EVENT_RETRY = 1.0  # upstream's podInitialBackoffSeconds
# Failures another pod's placement can cure (upstream requeues these on assigned-pod events).
POD_DEPENDENT_REASONS = frozenset({REASON_ANTI_AFFINITY, REASON_POD_AFFINITY, REASON_SKEW, REASON_MISSING})
MAX_BINDS_IN_FLIGHT = 128
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")

Obj = dict[str, Any]


def _is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def wants_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    return (not spec.get("nodeName") and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
            and not meta.get("deletionTimestamp") and not _is_terminal(pod))


class Scheduler(Controller):
    """See the module docstring. One worker: decisions are serial, binds concurrent."""

    name = "scheduler"
    component = SCHEDULER_NAME
    workers = 1

    def __init__(self, client: Client, informers: InformerFactory, percentage_of_nodes_to_score: int = 0) -> None:
        super().__init__(client, informers)
        self.nodes: dict[str, NodeInfo] = {}
        self._node_order: list[str] = []
        self._node_list: list[NodeInfo] = []
        self._next_start = 0
        self.percentage = percentage_of_nodes_to_score
        # pod key -> (node, requests, ports) as accounted on that node
        self._placed: dict[str, tuple[str, Requests, frozenset[tuple[str, str, int]]]] = {}
        self._by_node: dict[str, set[str]] = {}
        self._anti_holders: set[str] = set()  # placed pods with required anti-affinity
        self._affinity = PlacedPods()  # placed pods grouped for inter-pod affinity scoring
        self._owners = OwnerCounts()
        self._prefer_tainted = 0  # nodes with PreferNoSchedule taints
        self._zoned_nodes = 0  # nodes labelled topology.kubernetes.io/zone
        self._waiting_on_pods: set[str] = set()  # unschedulable for POD_DEPENDENT_REASONS
        self._assumed: set[str] = set()
        self._unschedulable: set[str] = set()
        self._binds = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self._bind_tasks: set[asyncio.Task[None]] = set()
        self.scheduled = 0
        self.node_informer = informers.informer(NODES)
        self.pod_informer = informers.informer(PODS)
        self.node_informer.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.pod_informer.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        self.pdb_informer = informers.informer(PDBS)  # read by preemption only
        self.preempted = 0  # victims deleted

    # -- cluster state ---------------------------------------------------------------------

    def _node_added(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            info = NodeInfo(name)
            self.nodes[name] = info
            self._node_order.append(name)
            self._node_list.append(info)
            # Pods may have been seen on this node before the node itself.
            for key in self._by_node.get(name, ()):
                _, req, ports = self._placed[key]
                info.add_pod(req, ports)
        self._set_node(info, node)
        self._flush_unschedulable()

    def _set_node(self, info: NodeInfo, node: Obj) -> None:
        """Update ``info`` and what the scheduler derives from node labels and taints."""
        zone = info.labels.get(ZONE)
        self._prefer_tainted -= info.prefer_no_schedule
        self._zoned_nodes -= ZONE in info.labels
        info.set_node(node)
        self._prefer_tainted += info.prefer_no_schedule
        self._zoned_nodes += ZONE in info.labels
        if info.labels.get(ZONE) != zone:
            for key in self._by_node.get(info.name, ()):
                self._owners.set_zone(key, info.labels.get(ZONE))

    def _node_updated(self, old: Obj, new: Obj) -> None:
        info = self.nodes.get(new["metadata"]["name"])
        if info is None:
            self._node_added(new)
            return
        self._set_node(info, new)
        # Lease-style heartbeats change nothing the filters read; only flush on real changes.
        if (old.get("spec") != new.get("spec") or (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels")
                or _ready(old) != _ready(new) or (old.get("status") or {}).get("allocatable") != (new.get("status") or {}).get("allocatable")):
            self._flush_unschedulable()

    def _node_deleted(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        info = self.nodes.pop(name, None)
        if info is not None:
            self._node_order.remove(name)
            self._node_list.remove(info)
            self._prefer_tainted -= info.prefer_no_schedule
            self._zoned_nodes -= ZONE in info.labels
            for key in self._by_node.get(name, ()):
                self._owners.set_zone(key, None)

    def _account(self, key: str, pod: Obj) -> None:
        """Make ``_placed`` reflect ``pod``: on its node while bound and not terminal."""
        node = (pod.get("spec") or {}).get("nodeName") or ""
        placed = self._placed.get(key)
        if placed is not None and (not node or placed[0] != node or _is_terminal(pod)):
            self._unplace(key)
            placed = None
        if placed is None and node and not _is_terminal(pod):
            self._place(key, node, pod_requests(pod), pod_host_ports(pod))

    def _place(self, key: str, node: str, req: Requests, ports: frozenset[tuple[str, str, int]]) -> None:
        pod = self.pod_informer.cache.get(key)
        info = self.nodes.get(node)
        if pod is not None:
            if has_required_anti_affinity(pod):
                self._anti_holders.add(key)
            self._index(key, pod, node, info)
        if info is not None:
            info.add_pod(req, ports)
        self._placed[key] = (node, req, ports)
        self._by_node.setdefault(node, set()).add(key)
        self._retry_waiting_on_pods()

    def _index(self, key: str, pod: Obj, node: str, info: NodeInfo | None) -> None:
        """File a placed pod under its labels, terms and owner for scoring."""
        self._affinity.add(key, pod, node)
        uid = owner_uid(pod)
        if uid is not None:
            self._owners.add(key, uid, node, info.labels.get(ZONE) if info is not None else None)
        else:
            self._owners.remove(key)

    def _unplace(self, key: str) -> None:
        self._anti_holders.discard(key)
        self._affinity.remove(key)
        self._owners.remove(key)
        placed = self._placed.pop(key, None)
        if placed is not None:
            info = self.nodes.get(placed[0])
            if info is not None:
                info.remove_pod(placed[1], placed[2])
            keys = self._by_node.get(placed[0])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_node[placed[0]]

    def _pod_added(self, pod: Obj) -> None:
        key = object_key(pod)
        self._assumed.discard(key)
        self._account(key, pod)
        if wants_scheduling(pod):
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = object_key(new)
        if (new.get("spec") or {}).get("nodeName"):
            self._assumed.discard(key)
        was_placed = key in self._placed
        self._account(key, new)
        if was_placed and key not in self._placed:
            self._flush_unschedulable()  # resources freed (pod finished)
        elif key in self._placed and (_labels(old) != _labels(new) or _owners_of(old) != _owners_of(new)):
            node_name = self._placed[key][0]
            self._index(key, new, node_name, self.nodes.get(node_name))
            self._retry_waiting_on_pods()  # affinity and spreading select pods by label
        # An unschedulable pod's own status patch must not requeue it; a change to it does.
        if wants_scheduling(new) and (key not in self._unschedulable or old.get("spec") != new.get("spec")
                                      or _labels(old) != _labels(new)):
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = object_key(pod)
        self._assumed.discard(key)
        self._unschedulable.discard(key)
        self._waiting_on_pods.discard(key)
        if key in self._placed:
            self._unplace(key)
            self._flush_unschedulable()

    def _flush_unschedulable(self) -> None:
        if self._unschedulable:
            keys: Iterable[str] = self._unschedulable
            if len(self._unschedulable) > 1:
                # Higher priority first, as upstream's active queue pops them: a preemptor must
                # reach the room its victims freed before lower-priority pods waiting with it.
                cache = self.pod_informer.cache
                keys = sorted(self._unschedulable, key=lambda k: -pod_priority(cache.get(k) or {}))
            for key in keys:
                self.queue.add(key)
            self._unschedulable.clear()
            self._waiting_on_pods.clear()

    def _retry_waiting_on_pods(self) -> None:
        if self._waiting_on_pods:
            for key in self._waiting_on_pods:
                self.queue.add_after(key, POD_EVENT_RETRY)
            self._waiting_on_pods.clear()

    # -- scheduling ------------------------------------------------------------------------

    def find_node(self, pod: Obj) -> tuple[str | None, dict[str, int]]:
        """The best node for ``pod`` (or None) and, when none fits, the failure reasons.

        The hot loop of the scheduler: a "plain" pod on a "plain_ok" node needs only integer
        comparisons (no function calls) — everything else goes through :func:`filter_node`.
        Scoring beyond least-allocated (a :class:`ScorePlan`) collects candidates; when the
        plan allows it, candidates its plugins cannot tell apart (no domain in the inter-pod
        table, the same zone and the same number of the owner's pods — none, for a "quiet"
        node) are folded into one per such class, keeping only the emptiest, so the plugins
        score a handful of nodes instead of hundreds even once the owner's pods are on every
        node. Every class keeps a member, so the spread plugin's normalisation (min and max
        over the candidates) is unchanged.
        """
        req = pod_requests(pod)
        facts = PodFacts(pod, req, pod_host_ports(pod), self._pod_rules(pod), self._spread_rules(pod))
        plan = self._score_plan(pod, facts)
        candidates: list[NodeInfo] = []
        least_allocated: list[float] = []
        fold = plan is not None and plan.foldable
        owner_count = plan.owner_nodes.get if plan is not None and plan.owner_nodes is not None else None
        table = list(plan.inter_pod.items()) if plan is not None and plan.inter_pod else []
        table_key, table_domains = table[0] if len(table) == 1 else ("", {})
        zoned = self._zoned_nodes > 0
        zones_seen: set[str] = set()
        # (zone, owner's pods on the node) -> the emptiest such node outside the inter-pod table
        quiet: dict[tuple[str | None, int | None], tuple[float, NodeInfo]] = {}
        quiet_info: NodeInfo | None = None  # the same without zones, kept in locals
        by_count: dict[int, tuple[float, NodeInfo]] = {}  # ...and for held nodes without zones
        fold_all = fold and not table
        quiet_score = -1.0
        nodes = self._node_list
        total = len(nodes)
        want = nodes_to_find(total, self.percentage)
        best: NodeInfo | None = None
        best_score = -1.0
        found = checked = 0
        reasons: dict[str, int] = {}
        start = self._next_start % total if total else 0
        plain = facts.plain
        cpu, mem = req.cpu, req.memory
        score_cpu, score_mem = cpu or NON_ZERO_CPU, mem or NON_ZERO_MEMORY
        for info in itertools.chain(itertools.islice(nodes, start, None), itertools.islice(nodes, 0, start)):
            checked += 1
            if not (plain and info.plain_ok and info.pod_count < info.alloc_pods
                    and info.req_cpu + cpu <= info.alloc_cpu and info.req_memory + mem <= info.alloc_memory):
                failed = filter_node(facts, info)
                if failed is not None:
                    for reason in failed:
                        reasons[reason] = reasons.get(reason, 0) + 1
                    continue
            found += 1
            # Least allocated (inlined least_allocated_score): mean free fraction after placing.
            alloc_cpu, alloc_mem = info.alloc_cpu, info.alloc_memory
            free_cpu = (alloc_cpu - info.score_cpu - score_cpu) / alloc_cpu if alloc_cpu > 0 else 0.0
            free_mem = (alloc_mem - info.score_memory - score_mem) / alloc_mem if alloc_mem > 0 else 0.0
            score = (free_cpu if free_cpu > 0 else 0.0) + (free_mem if free_mem > 0 else 0.0)
            if plan is None:
                if score > best_score:
                    best, best_score = info, score
            elif fold_all or (fold and (info.labels.get(table_key) not in table_domains if table_key
                                        else all(info.labels.get(k) not in d for k, d in table))):
                held = owner_count(info.name) if owner_count is not None else None
                if zoned:
                    zone = info.labels.get(ZONE)
                    zones_seen.add(zone or "")
                    kept = quiet.get((zone, held))
                    if kept is None or score > kept[0]:
                        quiet[(zone, held)] = (score, info)
                elif held is None:
                    if score > quiet_score:
                        quiet_info, quiet_score = info, score
                else:
                    kept = by_count.get(held)
                    if kept is None or score > kept[0]:
                        by_count[held] = (score, info)
            else:
                if zoned:
                    zones_seen.add(info.labels.get(ZONE) or "")
                candidates.append(info)
                least_allocated.append(score * 50.0)  # mean free percentage, 0..100
            if found >= want:
                break
        self._next_start = start + checked
        if plan is not None:
            if quiet_info is not None:
                quiet[(None, None)] = (quiet_score, quiet_info)
            for held_count, kept_node in by_count.items():
                quiet[(None, held_count)] = kept_node
            # Folded nodes first: among equal totals the first candidate wins.
            candidates[:0] = [info for _, info in quiet.values()]
            least_allocated[:0] = [score * 50.0 for score, _ in quiet.values()]
            best = plan.pick(candidates, least_allocated,
                             {HOSTNAME: found, ZONE: len(zones_seen) or 1} if fold else None)
        return (best.name if best is not None else None), reasons

    def _score_plan(self, pod: Obj, facts: PodFacts) -> ScorePlan | None:
        """The scoring beyond least-allocated ``pod`` needs, or None (the common, cheap case)."""
        spec = pod.get("spec") or {}
        if not (spec.get("affinity") or spec.get("topologySpreadConstraints") or self._affinity.has_terms
                or self._prefer_tainted or (pod.get("metadata") or {}).get("ownerReferences")):
            return None
        spread: SpreadScorer | None = None
        default_uid: str | None = None
        soft = soft_constraints(pod)
        if soft:
            spread = self._explicit_spread(pod, facts, soft)
        elif not (pod.get("spec") or {}).get("topologySpreadConstraints"):
            default_uid = owner_uid(pod)
            if default_uid is not None:
                spread = self._default_spread(default_uid, facts)
        inter_pod = None
        if self._affinity.has_terms or has_preferred_terms(pod):
            inter_pod = self._affinity.topology_scores(pod, self._node_labels)
        plan = ScorePlan(pod, preferred_node_terms(pod), self._prefer_tainted > 0, spread, inter_pod)
        # Folding needs every plugin to score alike the nodes it folds (see find_node).
        plan.foldable = not (plan.node_terms or plan.prefer_taints or soft)
        if default_uid is not None:
            plan.owner_nodes = self._owners.by_node.get(default_uid, {})
        return plan if plan.active else None

    def _default_spread(self, uid: str, facts: PodFacts) -> SpreadScorer:
        if facts.node_selector or facts.required_terms is not None:
            # Only nodes the pod could run on count toward zone totals (nodeAffinityPolicy Honor).
            zones: dict[str, int] = {}
            for node_name, count in self._owners.by_node.get(uid, {}).items():
                info = self.nodes.get(node_name)
                if info is not None and ZONE in info.labels and _affinity_allows(facts, info):
                    zones[info.labels[ZONE]] = zones.get(info.labels[ZONE], 0) + count
            return default_spread_scorer(uid, self._owners, zones)
        return default_spread_scorer(uid, self._owners)

    def _explicit_spread(self, pod: Obj, facts: PodFacts, constraints: list[Obj]) -> SpreadScorer:
        def counts_toward(info: NodeInfo, constraint: Obj) -> bool:
            if constraint.get("nodeAffinityPolicy", "Honor") == "Honor" and not _affinity_allows(facts, info):
                return False
            if constraint.get("nodeTaintsPolicy", "Ignore") == "Honor":
                return not any(t.effect in ("NoSchedule", "NoExecute")
                               and not any(tolerates(tol, t) for tol in facts.tolerations) for t in info.taints)
            return True

        placed = []
        for key, (node, _req, _ports) in self._placed.items():
            other = self.pod_informer.cache.get(key)
            if other is not None:
                placed.append((other, node))
        return explicit_spread_scorer(pod, constraints, self._node_list, placed, counts_toward)

    def _placed_pods(self, keys: Iterable[str]) -> list[tuple[Obj, dict[str, str]]]:
        out = []
        for key in keys:
            placed = self._placed.get(key)
            pod = self.pod_informer.cache.get(key)
            info = self.nodes.get(placed[0]) if placed else None
            if pod is not None and info is not None:
                out.append((pod, info.labels))
        return out

    def _node_labels(self, name: str) -> dict[str, str] | None:
        info = self.nodes.get(name)
        return info.labels if info is not None else None

    def _pod_rules(self, pod: Obj) -> PodAffinityRules | None:
        """Inter-pod (anti-)affinity rules, or None (the common case, kept cheap)."""
        own = bool(required_terms(pod, "podAntiAffinity") or required_terms(pod, "podAffinity"))
        if not own and not self._anti_holders:
            return None
        placed = self._placed_pods(self._placed) if own else []
        return build_rules(pod, placed, self._placed_pods(self._anti_holders))

    def _spread_rules(self, pod: Obj) -> SpreadRules | None:
        if not hard_constraints(pod):
            return None
        affinity_only = PodFacts(pod, Requests(), frozenset())

        def eligible(name: str) -> bool:
            info = self.nodes.get(name)
            return info is not None and _affinity_allows(affinity_only, info)

        placed = []
        for key, (node, _req, _ports) in self._placed.items():
            other = self.pod_informer.cache.get(key)
            if other is not None:
                placed.append((other, node))
        return build_spread_rules(pod, ((n, i.labels) for n, i in self.nodes.items()), placed, eligible)

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        pod = self.pod_informer.cache.get(key)
        self._unschedulable.discard(key)
        self._waiting_on_pods.discard(key)
        if pod is None or not wants_scheduling(pod) or key in self._assumed:
            return None
        node, reasons = self.find_node(pod)
        if node is None:
            message = failure_summary(len(self._node_order), reasons)
            nominated = None
            if self._node_order:
                nominated, post_filter_message = await self._preempt(pod)
                if post_filter_message:
                    message = f"{message} {post_filter_message}"
            self._unschedulable.add(key)
            if POD_DEPENDENT_REASONS.intersection(reasons):
                self._waiting_on_pods.add(key)
            self.queue.add_after(key, UNSCHEDULABLE_FLUSH)
            await self._mark_unschedulable(pod, message, nominated)
            return None
        # Assume: account the pod on the node now so the next decision sees it.
        self._assumed.add(key)
        self._place(key, node, pod_requests(pod), pod_host_ports(pod))
        await self._binds.acquire()
        task = asyncio.create_task(self._bind(key, pod, node))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)
        return None

    # -- preemption -------------------------------------------------------------------------

    def _lower_priority_pods_on(self, node: str, priority: int) -> list[PlacedPod]:
        out = []
        for key in self._by_node.get(node, ()):
            placed = self._placed.get(key)
            pod = self.pod_informer.cache.get(key)
            if placed is not None and pod is not None and pod_priority(pod) < priority:
                out.append(PlacedPod.of(key, pod, placed[1], placed[2]))
        return out

    def _terminating_lower_on(self, node: str, priority: int) -> bool:
        for key in self._by_node.get(node, ()):
            other = self.pod_informer.cache.get(key)
            if other is not None and (other.get("metadata") or {}).get("deletionTimestamp") and pod_priority(other) < priority:
                return True
        return False

    async def _preempt(self, pod: Obj) -> tuple[str | None, str]:
        """Run the post-filter: (the nominated node or None, the message to append or "")."""
        nominated = (pod.get("status") or {}).get("nominatedNodeName") or ""
        problem = eligibility_problem(pod, bool(nominated) and nominated in self.nodes
                                      and self._terminating_lower_on(nominated, pod_priority(pod)))
        if problem is not None:
            # Still waiting for its victims: keep the nomination, as upstream does.
            return (nominated or None) if problem == NOT_ELIGIBLE_TERMINATING else None, f"preemption: {problem}"
        req = pod_requests(pod)
        facts = PodFacts(pod, req, pod_host_ports(pod), self._pod_rules(pod), self._spread_rules(pod))
        outcome = preempt(pod, facts, self._node_list, self._lower_priority_pods_on, DisruptionBudgets(self.pdb_informer.cache.list()))
        candidate = outcome.candidate
        if candidate is None:
            return None, outcome.message
        uid = (pod.get("metadata") or {}).get("uid", "")
        for victim in candidate.victims:
            await self._evict(victim.pod, f"Preempted by pod {uid} on node {candidate.node}")
        return candidate.node, ""

    async def _evict(self, victim: Obj, message: str) -> None:
        """Mark ``victim`` DisruptionTarget, record ``Preempted`` and delete it gracefully."""
        meta = victim["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        condition = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                     "message": f"{SCHEDULER_NAME}: preempting to accommodate a higher priority pod",
                     "lastTransitionTime": now_rfc3339()}
        try:
            await self.client.patch(PODS, name, {"status": {"conditions": [condition]}}, namespace,
                                    patch_type="strategic", subresource="status")
            await self.client.delete(PODS, name, namespace, preconditions={"uid": meta.get("uid", "")})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
            return  # already gone (or replaced): nothing to evict
        self.preempted += 1
        self.recorder.record(victim, "Normal", "Preempted", message, kind="Pod", api_version="v1")

    async def _bind(self, key: str, pod: Obj, node: str) -> None:
        meta = pod["metadata"]
        try:
            await self.client.bind(meta.get("namespace", ""), meta["name"], node, meta.get("uid", ""))
        except ApiError as e:
            self._assumed.discard(key)
            current = self._placed.get(key)
            if current is not None and current[0] == node:
                self._unplace(key)
            if e.code != 404:
                log.info("binding %s to %s failed: %s", key, node, e.message)
                self.queue.add_rate_limited(key)
            return
        finally:
            self._binds.release()
        self.scheduled += 1
        self.recorder.record(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {node}",
                             kind="Pod", api_version="v1")

    async def _mark_unschedulable(self, pod: Obj, message: str, nominated: str | None = None) -> None:
        self.recorder.record(pod, "Warning", "FailedScheduling", message, kind="Pod", api_version="v1")
        status = pod.get("status") or {}
        conditions = status.get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if (current is not None and current.get("status") == "False" and current.get("message") == message
                and status.get("nominatedNodeName") == nominated):
            return
        patch: Obj = {"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": None, "lastTransitionTime": now_rfc3339(),
        }]}}
        if nominated or status.get("nominatedNodeName"):
            patch["status"]["nominatedNodeName"] = nominated  # None clears a stale nomination
        try:
            await self.client.patch(PODS, pod["metadata"]["name"], patch, pod["metadata"].get("namespace", ""),
                                    patch_type="strategic", subresource="status")
        except ApiError as e:
            if e.code not in (404, 409):
                raise

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for task in list(self._bind_tasks):
                task.cancel()
            await asyncio.gather(*self._bind_tasks, return_exceptions=True)


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _owners_of(obj: Obj) -> list[Obj]:
    return (obj.get("metadata") or {}).get("ownerReferences") or []


def _affinity_allows(facts: PodFacts, info: NodeInfo) -> bool:
    """The pod's nodeSelector and required node affinity admit ``info``."""
    if facts.node_selector and any(info.labels.get(k) != v for k, v in facts.node_selector.items()):
        return False
    return facts.required_terms is None or matches_node_selector_terms(facts.required_terms, info)


def _ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())
