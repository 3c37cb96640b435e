"""The DaemonSet controller: one pod on every eligible node.

A node is eligible when the template's nodeSelector and required node affinity match it and
every NoSchedule/NoExecute taint is tolerated — counting the tolerations upstream adds to
every daemon pod (not-ready, unreachable, disk/memory/PID pressure, unschedulable), so
daemons run on nodes ordinary pods avoid. Each daemon pod is pinned to its node with required
node affinity on ``metadata.name`` and placed by the scheduler, as upstream does since 1.12.

Per reconcile: create the missing pods, delete pods on nodes that are no longer eligible and
duplicates, and — with the RollingUpdate strategy — replace pods whose
``controller-revision-hash`` is not the current template's, at most ``maxUnavailable`` (int
or percent of the desired count rounded up, default 1) nodes unavailable at a time; old pods
that are not available anyway are replaced without waiting, as upstream does. Template history lives in
ControllerRevisions (:mod:`k3py.server.controllers.revisions`). Status carries the counts
``kubectl rollout status daemonset`` waits on: desiredNumberScheduled,
currentNumberScheduled, updatedNumberScheduled, numberReady, numberAvailable,
numberUnavailable, numberMisscheduled and observedGeneration.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable

from k3py.client.informer import InformerFactory
from k3py.client.interface import CONTROLLERREVISIONS, DAEMONSETS, NODES, Client
from k3py.server.controllers.common import (
    Obj,
    available_in,
    int_or_percent,
    is_deleting,
    is_pod_ready,
    meta,
    namespace_of,
    pod_phase,
    utcnow,
)
from k3py.server.controllers.podowner import PodOwnerController, pod_from_template
from k3py.server.controllers.revisions import (
    POD_REVISION_LABEL,
    ensure_current_revision,
    hash_of,
    owned_revisions,
    prune_revisions,
)
from k3py.server.scheduler.nodeinfo import NodeInfo, Requests
from k3py.server.scheduler.predicates import PodFacts, Taint, matches_node_selector_terms, tolerates

log = logging.getLogger("k3py.controllers.daemonset")

DAEMON_TOLERATIONS: list[Obj] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def _with_daemon_tolerations(tolerations: list[Obj]) -> list[Obj]:
    out = list(tolerations)
    for t in DAEMON_TOLERATIONS:
        if t not in out:
            out.append(dict(t))
    return out


def node_eligible(template_spec: Obj, node: Obj) -> bool:
    info = NodeInfo(node["metadata"]["name"])
    info.set_node(node)
    facts = PodFacts({"spec": template_spec}, Requests(), frozenset())
    if facts.node_selector and any(info.labels.get(k) != v for k, v in facts.node_selector.items()):
        return False
    if facts.required_terms is not None and not matches_node_selector_terms(facts.required_terms, info):
        return False
    tolerations = _with_daemon_tolerations(facts.tolerations)
    taints = list(info.taints)
    if info.unschedulable:
        taints.append(Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"))
    return all(t.effect not in ("NoSchedule", "NoExecute") or any(tolerates(x, t) for x in tolerations) for t in taints)


def daemon_pod(ds: Obj, node_name: str, revision_hash: str) -> Obj:
    pod = pod_from_template(ds, "apps/v1", "DaemonSet")
    pod["metadata"]["labels"][POD_REVISION_LABEL] = revision_hash
    spec = copy.deepcopy(pod["spec"])
    affinity = spec.setdefault("affinity", {})
    affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}
    spec["tolerations"] = _with_daemon_tolerations(spec.get("tolerations") or [])
    pod["spec"] = spec
    return pod


def _pinned_node(pod: Obj) -> str:
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        return str(node)
    terms = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


class DaemonSetController(PodOwnerController):
    """See the module docstring."""

    name = "daemonset"
    workers = 2
    owner_resource = DAEMONSETS
    owner_kind = "DaemonSet"

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.nodes = informers.informer(NODES)
        self.revisions = informers.informer(CONTROLLERREVISIONS)
        self.nodes.add_handler(self._all, self._all_on_change, self._all)

    def _all(self, _node: Obj) -> None:
        for ds in self.owners.cache.list():
            self.enqueue(ds)

    def _all_on_change(self, old: Obj, new: Obj) -> None:
        if (old.get("spec") != new.get("spec") or meta(old).get("labels") != meta(new).get("labels")):
            self._all(new)

    @staticmethod
    def _rolling_victims(strategy: Obj, eligible: list[str], by_node: dict[str, list[Obj]], doomed: list[Obj],
                         current_hash: str, min_ready: int) -> list[Obj]:
        """Old pods to delete in this step of a rolling update (upstream's rule for maxSurge 0).

        A node counts as unavailable when it has no pod, both an old and a new one, or a new
        one that is not available yet. Old pods that are not available are replaced at once
        (they serve nothing, and waiting for them could stall the update for ever); available
        old pods only while fewer than ``maxUnavailable`` nodes are unavailable.
        """
        max_unavailable = max(1, int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1),
                                                len(eligible), round_up=True))
        now = utcnow()
        unavailable = 0
        broken: list[Obj] = []
        candidates: list[Obj] = []
        for node in eligible:
            alive = [p for p in by_node.get(node, []) if not is_deleting(p) and p not in doomed]
            new = [p for p in alive if (meta(p).get("labels") or {}).get(POD_REVISION_LABEL) == current_hash]
            old = [p for p in alive if p not in new]
            if not alive or (new and old):
                unavailable += 1
            elif new:
                if available_in(new[0], min_ready, now) != 0:
                    unavailable += 1
            elif available_in(old[0], min_ready, now) != 0:
                broken.extend(old)
            else:
                candidates.extend(old)
        return broken + candidates[:max(0, max_unavailable - unavailable)]

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        ds = self.live_owner(key)
        if ds is None:
            return None
        spec = ds.get("spec") or {}
        revisions = owned_revisions(self.revisions.cache.list(namespace_of(ds)), meta(ds).get("uid", ""))
        _current, revisions = await ensure_current_revision(self.client, ds, "DaemonSet", revisions)
        current_hash = hash_of(spec.get("template") or {})
        pods = await self.claim_pods(ds)
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            if pod_phase(pod) == "Failed" and not is_deleting(pod):
                # A failed daemon pod is replaced (upstream deletes it and creates a new one).
                await self.delete_pods(key, [pod])
                continue
            by_node.setdefault(_pinned_node(pod), []).append(pod)
        template_spec = (spec.get("template") or {}).get("spec") or {}
        eligible = sorted(n["metadata"]["name"] for n in self.nodes.cache.list() if node_eligible(template_spec, n))
        eligible_set = set(eligible)
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = utcnow()
        requeue: float | None = None

        if self.expectations.satisfied(key):
            to_create = [n for n in eligible if not [p for p in by_node.get(n, []) if not is_deleting(p)]]
            to_delete: list[Obj] = []
            for node, node_pods in by_node.items():
                alive = [p for p in node_pods if not is_deleting(p)]
                if node not in eligible_set:
                    to_delete.extend(alive)
                elif len(alive) > 1:
                    alive.sort(key=lambda p: (p["metadata"]["labels"].get(POD_REVISION_LABEL) != current_hash, meta(p).get("creationTimestamp", "")))
                    to_delete.extend(alive[1:])
            strategy = spec.get("updateStrategy") or {}
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                to_delete.extend(self._rolling_victims(strategy, eligible, by_node, to_delete, current_hash, min_ready))
            if to_delete:
                await self.delete_pods(key, to_delete)
            if to_create:
                await self.create_pods(key, ds, [daemon_pod(ds, node, current_hash) for node in to_create])

        # Status from what exists now.
        desired = len(eligible)
        scheduled = updated = ready = available = misscheduled = 0
        for node, node_pods in by_node.items():
            alive = [p for p in node_pods if not is_deleting(p) and (p.get("spec") or {}).get("nodeName")]
            if not alive:
                continue
            if node not in eligible_set:
                misscheduled += 1
                continue
            scheduled += 1
            if any((meta(p).get("labels") or {}).get(POD_REVISION_LABEL) == current_hash for p in alive):
                updated += 1
            if any(is_pod_ready(p) for p in alive):
                ready += 1
            waits = [available_in(p, min_ready, now) for p in alive]
            if any(w == 0 for w in waits):
                available += 1
            else:
                pending = [w for w in waits if w]
                if pending:
                    requeue = min(pending) if requeue is None else min(requeue, min(pending))
        status = dict(ds.get("status") or {})
        status.update({
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": meta(ds).get("generation", 1),
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": max(0, desired - available),
        })
        for zero in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
            if not status.get(zero):
                status.pop(zero, None)
        await self.write_status(DAEMONSETS, ds, status)
        in_use = {(meta(p).get("labels") or {}).get(POD_REVISION_LABEL, "") for p in pods}
        await prune_revisions(self.client, ds, revisions, in_use | {current_hash})
        return None if requeue is None else requeue + 0.05
