"""The ReplicaSet controller: keep ``spec.replicas`` active pods matching the selector.

Each reconcile of a ReplicaSet:

1. *claims* its active pods (:mod:`~k3py.server.controllers.podowner`: pods it controls that
   still match its selector are kept, controlled pods that no longer match are released,
   matching orphans are adopted; inactive pods are left out, as upstream lists only active
   ones);
2. creates or deletes pods to reach ``spec.replicas`` — new pods come from the template in
   slow-start batches; surplus pods are deleted in upstream's ReplicaSet order
   (:func:`~k3py.server.controllers.podowner.pods_to_delete`), where a pod's rank is how many
   active pods of the ReplicaSets sharing its controller (a Deployment's old and new sets)
   run on its node;
3. writes status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
   minReadySeconds) and observedGeneration, then asks to be called again when a ready pod
   will become available.

Expectations keep it from acting twice on the same change before its pod cache catches up.

Cost at scale: a reconcile walks every pod of its owner, and every pod of a large owner changes
about three times on its way to Ready (created, bound, Running). Status-only wake-ups are
therefore coalesced and the per-pod facts cached, both in
:class:`~k3py.server.controllers.podowner.PodOwnerController`; without that, a 2,000-pod
ReplicaSet spends most of the control plane's CPU re-counting the same pods for each of its
4,000 status changes. Parsed selectors (the owner's and its template labels') are kept per
owner until they change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_dict
from k3py.client.informer import OWNER_UID_INDEX, InformerFactory, index_by_owner_uid
from k3py.client.interface import Client, Resource
from k3py.server.controllers.common import (
    Obj,
    available_in,
    controller_ref,
    is_deleting,
    meta,
    namespace_of,
    uid_of,
    utcnow,
)
from k3py.server.controllers.podowner import PodFacts, PodOwnerController, pods_to_delete

log = logging.getLogger("k3py.controllers.replicaset")


def _is_active(facts: PodFacts) -> bool:
    return facts.active


class ReplicaSetController(PodOwnerController):
    """See the module docstring."""

    name = "replicaset"
    workers = 4

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        # Owners by controller: the ReplicaSets whose pods rank a scale-down (related_pods).
        self.owners.add_indexer(OWNER_UID_INDEX, index_by_owner_uid)

    async def reconcile(self, key: Hashable) -> float | None:
        key = str(key)
        rs = self.owners.cache.get(key)
        if rs is None:
            self.forget_owner(key)
            return None
        self.note_sync(key)
        walk_started = time.perf_counter()
        pods = await self.claim_pods(rs, consider=_is_active)
        walked = time.perf_counter() - walk_started
        if self.expectations.satisfied(key) and not is_deleting(rs):
            pods = await self.manage_replicas(key, rs, pods)
        walk_started = time.perf_counter()
        status, next_check = self.count_status(rs, pods)
        self.note_walk(key, walked + time.perf_counter() - walk_started)
        await self.write_status(self.owner_resource, rs, status)
        return next_check

    async def manage_replicas(self, key: str, rs: Obj, pods: list[Obj]) -> list[Obj]:
        """Create or delete towards spec.replicas; returns ``pods`` less those just deleted (so
        the status written next does not count pods that are already going away)."""
        desired = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(pods) - desired
        if diff < 0:
            await self.create_pods(key, rs, -diff)
        elif diff > 0:
            related = self.related_pods(rs) if diff < len(pods) else []
            gone = await self.delete_pods(key, pods_to_delete(pods, related, diff))
            return [p for p in pods if uid_of(p) not in gone]
        return pods

    def related_pods(self, rs: Obj) -> list[Obj]:
        """The pods a scale-down of ``rs`` ranks against (upstream's getIndirectlyRelatedPods):
        those matching the selector of any owner sharing ``rs``'s controller, ``rs`` included —
        none when ``rs`` has no controller."""
        ref = controller_ref(rs)
        if ref is None:
            return []
        namespace = namespace_of(rs)
        siblings = [o for o in self.owners.cache.by_index(OWNER_UID_INDEX, str(ref.get("uid")))
                    if namespace_of(o) == namespace and (controller_ref(o) or {}).get("uid") == ref.get("uid")]
        candidates = self.pods.cache.list(namespace)
        facts_of = self.pod_facts.of
        related: dict[str, Obj] = {}
        for sibling in siblings:
            sel = self.cached_selector(sibling)
            if sel is None:
                continue
            for pod in candidates:
                if facts_of(pod).matches(sel):
                    related.setdefault(uid_of(pod), pod)
        return list(related.values())

    def template_selector(self, rs: Obj) -> LabelSelector | None:
        """A selector of the template's labels (for fullyLabeledReplicas), cached per owner."""
        labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        key = "template/" + uid_of(rs)
        hit = self._selectors.get(key)
        if hit is not None and hit[0] == labels:
            return hit[1]
        try:
            sel: LabelSelector | None = label_selector_from_dict({"matchLabels": labels})
        except SelectorError:
            sel = None  # labels no selector can express: compare them one by one
        self._selectors[key] = (labels, sel)
        return sel

    def count_status(self, rs: Obj, pods: list[Obj]) -> tuple[Obj, float | None]:
        """The status ``pods`` add up to, and the seconds until a ready pod becomes available."""
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = utcnow()
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        template_sel = self.template_selector(rs)
        ready = available = 0
        next_check: float | None = None
        fully_labeled = 0
        facts_of = self.pod_facts.of
        for pod in pods:
            facts = facts_of(pod)
            if template_sel is not None:
                fully_labeled += facts.matches(template_sel)
            elif all(facts.labels.get(k) == v for k, v in template_labels.items()):
                fully_labeled += 1
            if facts.ready:
                ready += 1
                wait = available_in(pod, min_ready, now) if min_ready > 0 else 0.0
                if wait == 0:
                    available += 1
                elif wait is not None:
                    next_check = wait if next_check is None else min(next_check, wait)
        old_status = rs.get("status") or {}
        status = dict(old_status)
        status.update({
            "replicas": len(pods),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": meta(rs).get("generation", 1),
        })
        return status, (None if next_check is None else next_check + 0.05)


RC = Resource("", "v1", "replicationcontrollers", "ReplicationController")


class ReplicationControllerManager(ReplicaSetController):
    """ReplicationControllers: ReplicaSets whose ``spec.selector`` is a plain label map.

    An RC without a selector selects its template's labels (the API server defaults that too).
    """

    name = "replicationcontroller"
    component = "replication-controller"
    owner_resource = RC
    owner_kind = "ReplicationController"

    def owner_selector(self, owner: Obj) -> LabelSelector | None:
        spec = owner.get("spec") or {}
        labels = spec.get("selector") or ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        if not labels:
            return None
        try:
            return label_selector_from_dict({"matchLabels": labels})
        except SelectorError:
            return None
